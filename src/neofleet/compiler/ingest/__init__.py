"""Safe loaders, one per framework, that turn a model file into a ``SourceModel``.

Never unpickles anything: ONNX is protobuf, PyTorch comes as a ``torch.export`` archive
read with ``torch.export.load``. Every loader checks the file, resolves the declared
inputs against the model's own, and provides a reference to verify candidates against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neofleet.compiler.errors import ModelLoadError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.inputs import InputDecl

FRAMEWORKS = ("onnx", "pytorch", "tflite")

__all__ = ["FRAMEWORKS", "SourceModel", "load_model"]


def load_model(path: Path, framework: str, decls: Sequence[InputDecl],
               workdir: Path) -> SourceModel:
    """Load ``path`` as ``framework``; ``workdir`` holds derived files (prepared ONNX)."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if framework == "onnx":
        from neofleet.compiler.ingest.onnx import load_onnx

        return load_onnx(path, decls, workdir)
    if framework == "pytorch":
        from neofleet.compiler.ingest.pytorch import load_exported_program

        return load_exported_program(path, decls, workdir)
    if framework == "tflite":
        from neofleet.compiler.ingest.tflite import load_tflite

        return load_tflite(path, decls, workdir)
    raise ModelLoadError(f"unknown framework {framework!r}; supported: {', '.join(FRAMEWORKS)}")
