"""DLRModel over small ONNX Runtime bundles written without compiling anything."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle import DigestMismatchError
from neofleet.runtime import DLRModel
from neofleet.runtime.backends.tvm import aligned
from neofleet.runtime.errors import IncompatibleBundleError, InputError
from tests.support.bundles import make_bundle

W = np.arange(8, dtype=np.float32).reshape(4, 2) / 10


def matmul_onnx_bytes() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(W, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "b", artifact_bytes=matmul_onnx_bytes()).path


def test_run_accepts_dict_list_and_array(bundle_dir: Path) -> None:
    model = DLRModel(bundle_dir, "cpu")
    x = np.array([[1, 2, 3, 4]], np.float32)
    expected = x @ W
    for value in ({"x": x}, [x], x):
        (out,) = model.run(value)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert model.get_input_names() == ["x"]
    assert model.get_input_shapes() == [[1, 4]]
    assert model.get_output_names() == ["y"] and model.get_output_dtypes() == ["float32"]
    assert model.has_metadata() and model.get_metadata()["Requirements"]["TargetArch"] == "x86_64"


@pytest.mark.parametrize(("value", "message"), [
    ({"z": np.zeros((1, 4), np.float32)}, r"unknown \['z'\], missing \['x'\]"),
    ([np.zeros((1, 4), np.float32)] * 2, "takes 1 inputs, got 2"),
    (np.zeros((2, 4), np.float32), r"shape \[2, 4\] given, model expects \[1, 4\]"),
    (np.zeros((1, 4), np.complex64), "dtype complex64 given, model expects float32"),
])
def test_bad_inputs_are_typed_errors(bundle_dir: Path, value: object, message: str) -> None:
    model = DLRModel(bundle_dir, "cpu")
    with pytest.raises(InputError, match=message):
        model.run(value)  # type: ignore[arg-type]
    model.run(np.zeros((1, 4), np.float32))  # still usable


def test_bundle_for_another_arch_is_refused_naming_the_target(tmp_path: Path) -> None:
    other = "aarch64" if DLRModel.__module__ and __import__("platform").machine() != "aarch64" \
        else "x86_64"
    bundle = make_bundle(tmp_path / "b", artifact_bytes=matmul_onnx_bytes(), arch=other)
    with pytest.raises(IncompatibleBundleError, match=f"built for target linux-{other}"):
        DLRModel(bundle.path, "cpu")


def test_gpu_dev_type_is_refused_for_a_cpu_bundle(bundle_dir: Path) -> None:
    with pytest.raises(IncompatibleBundleError, match="cannot run it on dev_type='gpu'"):
        DLRModel(bundle_dir, "gpu")


def test_tampered_bundle_is_refused_before_loading(bundle_dir: Path) -> None:
    artifact = bundle_dir / "compiled.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(DigestMismatchError, match="compiled.onnx"):
        DLRModel(bundle_dir, "cpu")


def test_concurrent_runs_give_correct_results(bundle_dir: Path) -> None:
    model = DLRModel(bundle_dir, "cpu")
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(50):
            x = rng.standard_normal((1, 4)).astype(np.float32)
            if not np.allclose(model.run(x)[0], x @ W, rtol=1e-5, atol=1e-6):
                errors.append(f"thread {seed} got a wrong result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_aligned_copies_only_when_needed() -> None:
    raw = np.zeros(256, np.uint8)
    start = -raw.ctypes.data % 64
    base = raw[start:start + 64].view(np.float32)
    assert aligned(base) is base
    odd = raw[start + 4:start + 36].view(np.float32)
    odd[:] = np.arange(8, dtype=np.float32)
    assert odd.ctypes.data % 64 != 0
    out = aligned(odd)
    assert out.ctypes.data % 64 == 0
    np.testing.assert_array_equal(out, np.arange(8, dtype=np.float32))


def test_dlr_alias_module(bundle_dir: Path) -> None:
    import neofleet.dlr as dlr

    assert dlr.DLRModel is DLRModel
    model = dlr.DLRModel(str(bundle_dir), "cpu")
    assert model.get_version() and model.get_input_dtypes() == ["float32"]


def test_model_loads_from_a_verified_private_copy(bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    model = DLRModel(bundle_dir, "cpu")
    shutil.rmtree(bundle_dir)  # nothing is read from the bundle after loading
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(model.run(x)[0], x @ W, rtol=1e-6)
    assert model.bundle.path == bundle_dir


def test_symlinked_file_in_a_bundle_is_refused(tmp_path: Path) -> None:
    from neofleet.bundle import UnexpectedFileError

    bundle = make_bundle(tmp_path / "b", artifact_bytes=matmul_onnx_bytes())
    target = tmp_path / "elsewhere.onnx"
    (bundle.path / "compiled.onnx").rename(target)
    (bundle.path / "compiled.onnx").symlink_to(target)
    with pytest.raises(UnexpectedFileError, match="compiled.onnx"):
        DLRModel(bundle.path, "cpu")
