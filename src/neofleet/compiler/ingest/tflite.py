"""TFLite ingest: not supported in this build.

TVM 0.27's Relax frontends cover ONNX and PyTorch (``torch.export``); its TFLite importer
also needs the ``tflite`` flatbuffer package. Until that path is built and verified, a
TFLite model is refused with a clear message instead of a half-working import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neofleet.compiler.errors import ModelLoadError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.inputs import InputDecl


def load_tflite(path: Path, decls: Sequence[InputDecl], workdir: Path) -> SourceModel:
    raise ModelLoadError(
        f"{path.name}: TFLite models are not supported yet; convert to ONNX "
        "(python -m tf2onnx.convert --tflite model.tflite --output model.onnx)")
