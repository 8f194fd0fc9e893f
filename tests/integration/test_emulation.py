"""aarch64 bundles really run under qemu-aarch64-static (neofleet.compiler.emulation).

Needs qemu-user-static and the environment from scripts/setup-aarch64-python.sh (skipped
without them); the TVM test also cross-links with aarch64-linux-gnu-g++.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle import Bundle, write_bundle
from neofleet.bundle.meta import (
    Compilation,
    CompiledMeta,
    ModelSignature,
    NeofleetSection,
    Requirements,
    TensorSpec,
    Verification,
)
from neofleet.compiler.emulation import (
    EmulatedProbeError,
    EmulationError,
    EmulationTimeoutError,
    emulated_probe,
    find_emulator,
)

pytestmark = pytest.mark.integration

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
IN_SHAPE, OUT_SHAPE = [4, 16], [4, 8]


@pytest.fixture(scope="module", autouse=True)
def _emulator() -> None:
    try:
        find_emulator()
    except EmulationError as exc:
        pytest.skip(f"no aarch64 emulation here: {exc}")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A MatMul+Relu ONNX model, an input .npz and onnxruntime's output on the host."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = rng.standard_normal((IN_SHAPE[1], OUT_SHAPE[1])).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, IN_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, OUT_SHAPE)],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    root = tmp_path_factory.mktemp("model")
    paths = {"onnx": root / "model.onnx", "inputs": root / "in.npz", "expected": root / "ref.npy"}
    onnx.save(proto, paths["onnx"])
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)
    np.savez(paths["inputs"], x=x)
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    np.save(paths["expected"], session.run(["y"], {"x": x})[0])
    return paths


def _meta(backend: str, options: dict[str, str], source: Path) -> CompiledMeta:
    return CompiledMeta(
        requirements=Requirements(target_device="test-aarch64", target_device_type="cpu",
                                  target_arch="aarch64"),
        model=ModelSignature(inputs=[TensorSpec(name="x", shape=IN_SHAPE, dtype="float32")],
                             outputs=[TensorSpec(name="y", shape=OUT_SHAPE, dtype="float32")]),
        compilation=Compilation(created_time="2025-01-01T00:00:00Z", compile_seconds=0.0),
        neofleet=NeofleetSection(
            target=TARGET, backend=backend, backend_options=options,
            compiler={"neofleet": "test"}, framework="onnx",
            source={"sha256": hashlib.sha256(source.read_bytes()).hexdigest()},
            verification=Verification(passed=False, method="not-run", samples=0, rtol=0.0,
                                      atol=1e-5),
        ),
    )


def _write(dest: Path, artifact: Path, name: str, backend: str, options: dict[str, str],
           source: Path) -> Bundle:
    return write_bundle(dest, files={name: artifact}, artifact=name, backend=backend,
                        meta=_meta(backend, options, source),
                        graph={"nodes": ["MatMul", "Relu"]})


def _ort_bundle(dest: Path, model: dict[str, Path]) -> Bundle:
    return _write(dest, model["onnx"], "compiled.onnx", "onnxruntime",
                  {"graph_optimization_level": "ORT_ENABLE_ALL"}, model["onnx"])


def _check_outputs(outputs: Path, model: dict[str, Path]) -> None:
    with np.load(outputs, allow_pickle=False) as data:
        got = data["output_0"]
    expected = np.load(model["expected"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _probe(bundle: Bundle, model: dict[str, Path], outputs: Path) -> dict[str, float]:
    start = time.perf_counter()
    report = emulated_probe(bundle.path, model["inputs"], outputs, warmup=1, repeat=3)
    print(f"emulated probe ({bundle.manifest.backend}): {time.perf_counter() - start:.2f} s "
          f"wall, report {report}")
    return report


def test_tvm_bundle_runs_under_qemu(model: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("no aarch64-linux-gnu-g++: run scripts/setup-aarch64-python.sh")
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(model["onnx"]), shape_dict={"x": IN_SHAPE},
                    keep_params_in_input=False)
    target = tvm.target.Target(TARGET)
    executable = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    library = tmp_path / "compiled.so"
    executable.export_library(str(library),
                              fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    assert library.read_bytes()[18:20] == b"\xb7\x00"  # e_machine EM_AARCH64
    bundle = _write(tmp_path / "bundle", library, "compiled.so", "tvm", {}, model["onnx"])

    report = _probe(bundle, model, tmp_path / "out.npz")

    _check_outputs(tmp_path / "out.npz", model)
    assert report["runs"] == 3 and report["load_seconds"] > 0


def test_onnxruntime_bundle_runs_under_qemu(model: dict[str, Path], tmp_path: Path) -> None:
    bundle = _ort_bundle(tmp_path / "bundle", model)

    report = _probe(bundle, model, tmp_path / "out.npz")

    _check_outputs(tmp_path / "out.npz", model)
    assert report["runs"] == 3 and report["median_ms"] > 0


def test_tampered_bundle_fails_with_integrity_reason(model: dict[str, Path],
                                                     tmp_path: Path) -> None:
    bundle = _ort_bundle(tmp_path / "bundle", model)
    with bundle.artifact_path.open("ab") as handle:
        handle.write(b"\0")

    with pytest.raises(EmulatedProbeError) as caught:
        emulated_probe(bundle.path, model["inputs"], tmp_path / "out.npz")

    assert caught.value.reason == "BundleIntegrity"
    assert caught.value.returncode == 2
    assert "compiled.onnx" in str(caught.value)
    assert not (tmp_path / "out.npz").exists()


def test_timeout_kills_the_guest(model: dict[str, Path], tmp_path: Path) -> None:
    bundle = _ort_bundle(tmp_path / "bundle", model)

    start = time.perf_counter()
    with pytest.raises(EmulationTimeoutError, match="ran past 0.5 s"):
        emulated_probe(bundle.path, model["inputs"], tmp_path / "out.npz", timeout_s=0.5)

    assert time.perf_counter() - start < 5


def test_missing_environment_says_how_to_build_it(
    model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEOFLEET_AARCH64_PYTHON", str(tmp_path / "nothing-here"))

    with pytest.raises(EmulationError, match="setup-aarch64-python.sh") as caught:
        emulated_probe(tmp_path, model["inputs"], tmp_path / "out.npz")

    assert caught.value.reason == "EmulatorUnavailable"
