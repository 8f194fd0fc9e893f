"""``--backend auto`` on a GPU preset where TensorRT is not installed: tensorrt is skipped
in favour of tvm-cuda (built with nvcc, no GPU needed), and the bundle says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.runtime.backends.tensorrt import import_tensorrt
from tests.conftest import make_mlp_onnx

pytestmark = pytest.mark.integration


def test_auto_skips_tensorrt_and_the_selection_says_why(tmp_path: Path) -> None:
    if import_tensorrt()[0] is not None:
        pytest.skip("TensorRT imports here: auto would build it")
    model = make_mlp_onnx(tmp_path / "mlp.onnx")
    result = compile_model(CompileRequest(model=model, framework="onnx", inputs=[],
                                          targets=["nvidia-t4"], output=tmp_path / "out",
                                          tuning_db=None))
    built = result.targets[0]
    assert built.bundle is not None, built.error
    section = built.bundle.meta.neofleet
    assert section.backend == "tvm-cuda"
    skipped = {c.backend: c for c in section.candidates}["tensorrt"]
    assert skipped.status == "not-applicable"
    assert skipped.message.startswith("TensorRT is not installed in this compile image")
    assert section.selection is not None
    assert "tensorrt skipped: TensorRT is not installed" in section.selection.reason
    assert "compiler-image/Dockerfile.gpu" in section.selection.reason
