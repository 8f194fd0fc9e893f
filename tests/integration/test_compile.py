"""The compiler end to end with the real compilers, the real runtime and real qemu."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle import open_bundle
from neofleet.compiler.pipeline import CompileRequest, CompileResult, compile_model
from neofleet.runtime import DLRModel
from neofleet.runtime.errors import IncompatibleBundleError
from tests.conftest import EXAMPLE_ONNX, EXAMPLE_PT2

pytestmark = pytest.mark.integration


def _compile(model: Path, framework: str, targets: list[str], out: Path, tuning_db: Path,
             backend: str = "auto", inputs: tuple[str, ...] = ()) -> CompileResult:
    from neofleet.compiler.inputs import parse_input_decl

    return compile_model(CompileRequest(
        model=model, framework=framework, inputs=[parse_input_decl(i) for i in inputs],
        targets=targets, output=out, backend=backend, tuning_db=tuning_db))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    """tiny_cnn.onnx for the host and for aarch64, compiled once for this module."""
    root = tmp_path_factory.mktemp("compiled")
    return _compile(EXAMPLE_ONNX, "onnx", ["native", "aarch64"], root / "out", root / "db")


def _ort(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": x})[0])


def test_auto_builds_verifies_and_benchmarks_every_candidate(compiled: CompileResult) -> None:
    assert compiled.ok
    native = compiled.targets[0].bundle
    assert native is not None
    meta = native.meta.neofleet
    statuses = {c.backend: c.status for c in meta.candidates}
    assert statuses.pop("tl2cgen") == "not-applicable"   # tree models only, and says so
    assert set(statuses) == {"onnxruntime", "openvino", "tvm"}
    assert "selected" in statuses.values()
    for cand in (c for c in meta.candidates if c.backend in statuses):
        assert cand.verification is not None and cand.verification.passed
        assert cand.verification.method == "host"
        assert cand.benchmark is not None and cand.benchmark.median_ms > 0
    assert meta.selection is not None and meta.selection.rule == "fastest-verified"
    fastest = min(meta.candidates, key=lambda c: c.benchmark.median_ms if c.benchmark else 1e9)
    assert meta.backend == fastest.backend
    assert meta.source["sha256"] == compiled.model_sha256
    assert native.meta.requirements.target_device_type == "cpu"


def test_native_bundle_runs_through_dlrmodel_and_matches_onnxruntime(
        compiled: CompileResult) -> None:
    native = compiled.targets[0].bundle
    assert native is not None
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = DLRModel(native.path, "cpu").run({"image": x})[0]
    np.testing.assert_allclose(out, _ort(EXAMPLE_ONNX, x), rtol=1e-4, atol=1e-6)


def test_aarch64_bundle_is_verified_under_qemu_and_refused_here(compiled: CompileResult) -> None:
    bundle = compiled.targets[1].bundle
    assert bundle is not None
    meta = bundle.meta.neofleet
    assert bundle.meta.requirements.target_arch == "aarch64"
    assert meta.verification.method == "qemu-aarch64" and meta.verification.passed
    for cand in (c for c in meta.candidates if c.status != "not-applicable"):
        assert cand.verification is not None and cand.verification.method == "qemu-aarch64"
        assert cand.benchmark is None
    assert meta.selection is not None and meta.selection.rule == "preference-without-benchmark"
    with pytest.raises(IncompatibleBundleError, match=r"built for target aarch64 \(aarch64\)"):
        DLRModel(bundle.path, "cpu")


def test_tvm_bundle_runs_with_unaligned_inputs(tmp_path: Path) -> None:
    result = _compile(EXAMPLE_ONNX, "onnx", ["native"], tmp_path / "out", tmp_path / "db",
                      backend="tvm")
    bundle = result.targets[0].bundle
    assert bundle is not None and bundle.manifest.backend == "tvm"
    assert bundle.manifest.artifact == "compiled.so"
    raw = np.zeros(3 * 32 * 32 * 4 + 64 + 4, np.uint8)
    offset = (-raw.ctypes.data % 64) + 4
    x = raw[offset:offset + 3 * 32 * 32 * 4].view(np.float32).reshape(1, 3, 32, 32)
    x[...] = np.random.default_rng(3).standard_normal(x.shape)
    assert x.ctypes.data % 64 != 0
    out = DLRModel(bundle.path, "cpu").run(x)[0]
    np.testing.assert_allclose(out, _ort(EXAMPLE_ONNX, np.ascontiguousarray(x)), atol=1e-5)
    graph = json.loads((bundle.path / "compiled_model.json").read_text())
    assert graph["backend"] == "tvm" and graph["kernels"] > 0


def test_pytorch_export_archive_compiles_with_both_backends(tmp_path: Path) -> None:
    import torch

    result = _compile(EXAMPLE_PT2, "pytorch", ["native"], tmp_path / "out", tmp_path / "db")
    bundle = result.targets[0].bundle
    assert bundle is not None, result.targets[0].error
    meta = bundle.meta.neofleet
    assert meta.framework == "pytorch" and meta.source["reference"] == "torch.export"
    assert {c.backend for c in meta.candidates if c.status in {"verified", "selected"}} == {
        "onnxruntime", "openvino", "tvm"}
    program = torch.export.load(str(EXAMPLE_PT2))
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = program.module()(torch.from_numpy(x)).detach().numpy()
    out = DLRModel(bundle.path, "cpu").run([x])[0]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)


def test_declared_batch_for_a_dynamic_model(tmp_path: Path) -> None:
    from tests.conftest import make_mlp_onnx

    model = make_mlp_onnx(tmp_path / "dyn.onnx", batch="N")
    result = _compile(model, "onnx", ["native"], tmp_path / "out", tmp_path / "db",
                      inputs=("x:8x16:float32",))
    bundle = result.targets[0].bundle
    assert bundle is not None, result.targets[0].error
    assert bundle.meta.model.inputs[0].shape == [8, 16]
    assert bundle.meta.model.outputs[0].shape == [8, 4]


def test_cli_compile_json_and_inspect(tmp_path: Path) -> None:
    from tests.conftest import make_mlp_onnx

    model = make_mlp_onnx(tmp_path / "mlp.onnx")
    cmd = [sys.executable, "-m", "neofleet.cli", "compile", str(model), "--framework", "onnx",
           "--target", "x86_64-avx2", "--output", str(tmp_path / "out"), "--json",
           "--tuning-db", str(tmp_path / "db")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    row = doc["targets"][0]
    assert doc["ok"] and row["status"] == "Succeeded" and row["target"] == "x86_64-avx2"
    assert row["digest"] == open_bundle(tmp_path / "out" / "x86_64-avx2").digest
    assert "verifying on this host" in done.stderr
    shown = subprocess.run([sys.executable, "-m", "neofleet.cli", "inspect",
                            str(tmp_path / "out" / "x86_64-avx2"), "--json"],
                           capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["digest"] == row["digest"]


def test_tuning_records_are_kept_and_reused_across_compiles(tmp_path: Path) -> None:
    from tests.conftest import make_mlp_onnx

    model = make_mlp_onnx(tmp_path / "mlp.onnx", batch=8, features=64, hidden=64)
    db = tmp_path / "db"
    runs = []
    for attempt in range(2):
        result = compile_model(CompileRequest(
            model=model, framework="onnx", inputs=[], targets=["native"],
            output=tmp_path / f"out{attempt}", backend="tvm", tuning_trials=16, tuning_db=db))
        bundle = result.targets[0].bundle
        assert bundle is not None, result.targets[0].error
        runs.append(bundle.meta.neofleet.backend_options["tuning"])
    first, second = runs
    assert first["tasks"] > 0 and first["tuned_tasks"] > 0 and first["trials"] > 0
    assert second["reused_tasks"] == second["tasks"] == first["tasks"]
    assert second["trials"] == 0 and second["tuned_tasks"] == 0
    assert any(db.iterdir())
