"""The tensorrt backend with TensorRT and a GPU: ONNX → engine → DLRModel(..., "gpu").

Skipped wherever TensorRT does not import (every machine of this project so far: its
packages come from NVIDIA's index, which is unreachable here) or where no catalogue preset
describes this host's GPU and TensorRT. Run them inside the image of
compiler-image/Dockerfile.gpu on a node of a GPU preset's kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neofleet.compiler.pipeline import CompileRequest, CompileResult, compile_model
from neofleet.compiler.targets import CATALOGUE, Target, host_arch
from neofleet.runtime.backends.tensorrt import host_facts
from tests.conftest import EXAMPLE_ONNX, make_mlp_onnx

pytestmark = pytest.mark.integration

HOST = host_facts()
if HOST.trt_version is None:
    pytest.skip(f"TensorRT is not installed here ({HOST.trt_error}); these tests run in the "
                "image of compiler-image/Dockerfile.gpu on a GPU node", allow_module_level=True)


def _preset() -> Target:
    from neofleet.compiler.backends.tensorrt import build_blocker

    gpu = HOST.gpu(0)
    if gpu is None:
        pytest.skip(f"TensorRT {HOST.trt_version} is installed but {HOST.describe_gpu(0)}")
    reasons = []
    for target in CATALOGUE:
        if target.device_type == "gpu" and target.arch == host_arch() \
                and target.compute_capability == gpu.cc:
            blocker = build_blocker(target, True, HOST)
            if blocker is None:
                return target
            reasons.append(f"{target.name}: {blocker}")
    pytest.skip(f"no GPU preset this host can build for ({'; '.join(reasons) or gpu.cc})")


def _compile(model: Path, out: Path, options: dict[str, str] | None = None,
             inputs: tuple[str, ...] = (), rtol: float = 1e-3,
             atol: float = 1e-4) -> CompileResult:
    from neofleet.compiler.inputs import parse_input_decl
    from neofleet.compiler.verify import Tolerance

    return compile_model(CompileRequest(
        model=model, framework="onnx", inputs=[parse_input_decl(i) for i in inputs],
        targets=[_preset().name], output=out, backend="tensorrt", tuning_db=None,
        compiler_options=options or {}, tolerance=Tolerance(rtol=rtol, atol=atol)))


def _ort(model: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_an_engine_is_built_recorded_and_run_on_this_gpu(tmp_path: Path) -> None:
    from neofleet.runtime import DLRModel

    result = _compile(EXAMPLE_ONNX, tmp_path / "out")
    built = result.targets[0]
    assert built.bundle is not None, built.error
    section = built.bundle.meta.neofleet
    gpu = HOST.gpu(0)
    assert gpu is not None
    assert section.backend == "tensorrt"
    assert section.backend_options["trt_version"] == HOST.trt_version
    assert section.backend_options["compute_capability"] == gpu.cc
    assert section.compiler["tensorrt"] == HOST.trt_version
    assert (built.bundle.path / "compiled.plan").is_file()
    model = DLRModel(built.bundle.path, "gpu")
    x = np.random.default_rng(0).standard_normal(model.get_input_shapes()[0]).astype(np.float32)
    got = model.run({model.get_input_names()[0]: x})[0]
    want = _ort(EXAMPLE_ONNX, {model.get_input_names()[0]: x})
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_fp16_and_a_dynamic_batch_profile(tmp_path: Path) -> None:
    from neofleet.runtime import DLRModel

    onnx_file = make_mlp_onnx(tmp_path / "dyn.onnx", batch="N")
    result = _compile(onnx_file, tmp_path / "out", {"fp16": "true", "max_batch": "32"},
                      inputs=("x:8x16:float32",), rtol=5e-2, atol=5e-2)
    built = result.targets[0]
    assert built.bundle is not None, built.error
    options = built.bundle.meta.neofleet.backend_options
    assert options["precision"] == "fp16"
    assert options["profile"]["x"] == {"min": [1, 16], "opt": [8, 16], "max": [32, 16]}
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    got = DLRModel(built.bundle.path, "gpu").run({"x": x})[0]
    np.testing.assert_allclose(got, _ort(onnx_file, {"x": x}), rtol=5e-2, atol=5e-2)
