"""Safe loaders, one per framework, that turn a model file into a ``SourceModel``.

Never unpickles anything: ONNX is protobuf, PyTorch comes as a ``torch.export`` archive
read with ``torch.export.load``, tree ensembles in their libraries' own formats (skops for
scikit-learn); pickle and joblib files are refused before any library reads them. Every
loader checks the file, resolves the declared inputs against the model's own, and provides
a reference to verify candidates against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neofleet.compiler.errors import ModelLoadError, SampleDataError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.inputs import InputDecl

TREE_FRAMEWORKS = ("xgboost", "lightgbm", "sklearn", "treelite")
FRAMEWORKS = ("onnx", "pytorch", "tflite", *TREE_FRAMEWORKS)

__all__ = ["FRAMEWORKS", "TREE_FRAMEWORKS", "SourceModel", "load_model"]


def load_model(path: Path, framework: str, decls: Sequence[InputDecl],
               workdir: Path, sample_data: Path | None = None) -> SourceModel:
    """Load ``path`` as ``framework``; ``workdir`` holds derived files (prepared ONNX).
    ``sample_data`` is an .npz of named arrays with a leading batch of samples (tree models
    also take a .npy of rows): the inputs candidates are verified and timed on."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if sample_data is not None and not sample_data.is_file():
        raise SampleDataError(f"--sample-data {sample_data} does not exist")
    if framework in TREE_FRAMEWORKS:
        from neofleet.compiler.ingest.trees import load_tree_model

        return load_tree_model(path, framework, decls, sample_data)
    if framework == "onnx":
        from neofleet.compiler.ingest.onnx import load_onnx

        return load_onnx(path, decls, workdir, sample_data)
    if framework == "pytorch":
        from neofleet.compiler.ingest.pytorch import load_exported_program

        return load_exported_program(path, decls, workdir, sample_data)
    if framework == "tflite":
        from neofleet.compiler.ingest.tflite import load_tflite

        return load_tflite(path, decls, workdir)
    raise ModelLoadError(f"unknown framework {framework!r}; supported: {', '.join(FRAMEWORKS)}")
