"""Models whose inputs random values break compile: token ids bounded by their embedding
tables, a 0-d sample rate compared with a constant, state inputs and two outputs; the
user's representative inputs (``--sample-data``) are checked and used; bad samples and
models that fail on valid samples get one-line typed errors and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.token_models import encoder_onnx, stateful_onnx

pytestmark = pytest.mark.integration


def _compile(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neofleet.cli", "compile", *map(str, args)],
                          capture_output=True, text=True, timeout=900, check=False)


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "compiled.meta").read_text())["Neofleet"]


def _tokens(count: int, vocab: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"input_ids": rng.integers(0, vocab, (count, 1, 16)).astype(np.int64),
            "token_type_ids": rng.integers(0, 2, (count, 1, 16)).astype(np.int64),
            "attention_mask": np.ones((count, 1, 16), np.int64)}


def test_an_encoder_compiles_without_samples_on_values_its_tables_accept(
        tmp_path: Path) -> None:
    from neofleet.runtime import DLRModel

    model = encoder_onnx(tmp_path / "encoder.onnx", vocab=50, types=2)
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out")
    assert done.returncode == 0, done.stderr
    source = _meta(tmp_path / "out" / "native")["source"]
    assert "token_type_ids in [0, 2)" in source["samples"] and source["graph"] == "prepared"
    dlr = DLRModel(str(tmp_path / "out" / "native"), "cpu")
    feed = {k: v[0] for k, v in _tokens(1).items()}
    import onnxruntime as ort

    want = ort.InferenceSession(str(model)).run(None, feed)[0]
    np.testing.assert_allclose(dlr.run(feed)[0], want, rtol=1e-4, atol=1e-5)


def test_given_samples_are_the_ones_verified(tmp_path: Path) -> None:
    model = encoder_onnx(tmp_path / "encoder.onnx")
    np.savez(tmp_path / "tokens.npz", **_tokens(5))
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out", "--sample-data", tmp_path / "tokens.npz")
    assert done.returncode == 0, done.stderr
    meta = _meta(tmp_path / "out" / "native")
    assert meta["verification"]["samples"] == 5
    assert meta["source"]["samples"] == "the 5 samples of --sample-data"


@pytest.mark.parametrize(("change", "expected"), [
    ({"input_ids": np.zeros((5, 1, 8), np.int64)},
     "input input_ids expects N samples of 1x16 int64"),
    ({"attention_mask": np.ones((5, 1, 16), np.int32)}, "got shape [5, 1, 16] int32"),
    ({"token_type_ids": None}, "missing input(s) token_type_ids"),
])
def test_samples_that_do_not_fit_fail_in_one_line_and_write_nothing(
        tmp_path: Path, change: dict[str, np.ndarray | None], expected: str) -> None:
    model = encoder_onnx(tmp_path / "encoder.onnx")
    arrays = {k: v for k, v in {**_tokens(5), **change}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out", "--sample-data", tmp_path / "bad.npz")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("neofleet: InvalidSampleData: --sample-data bad.npz: "), lines
    assert expected in lines[-1] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_that_fails_on_valid_samples_names_them_and_the_operator(
        tmp_path: Path) -> None:
    """Token ids past the vocabulary: ONNX Runtime's Gather fails; a typed error, not an
    internal one."""
    model = encoder_onnx(tmp_path / "encoder.onnx", vocab=50)
    np.savez(tmp_path / "big.npz", **_tokens(2, vocab=500))
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out", "--sample-data", tmp_path / "big.npz")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("neofleet: ModelFailedOnSamples: onnxruntime fails on the 2 samples "
                           "of --sample-data: "), last
    assert "Gather" in last and "InternalError" not in done.stderr
    assert not (tmp_path / "out").exists()


def _shape_input_onnx(path: Path) -> Path:
    """An int64 input that is a shape (Reshape's target): no generated value can be
    trusted, so the compile must ask for samples."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "new_shape"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
         helper.make_tensor_value_info("new_shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_inputs_no_generated_value_fits_ask_for_samples_by_name(tmp_path: Path) -> None:
    model = _shape_input_onnx(tmp_path / "reshape.onnx")
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("neofleet: ModelFailedOnSamples: "), last
    assert last.endswith("give --sample-data FILE.npz with realistic values for new_shape")
    assert not (tmp_path / "out").exists()
    np.savez(tmp_path / "shapes.npz", x=np.ones((2, 2, 6), np.float32),
             new_shape=np.array([[3, 4], [4, 3]], np.int64))
    done = _compile(model, "--framework", "onnx", "--target", "native", "--output",
                    tmp_path / "out", "--sample-data", tmp_path / "shapes.npz",
                    "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr             # with real shapes it compiles
    assert _meta(tmp_path / "out" / "native")["verification"]["samples"] == 2


def test_a_stateful_model_with_a_scalar_rate_serves_end_to_end(
        tmp_path: Path, serve) -> None:
    import httpx
    import onnxruntime as ort

    from neofleet.runtime import DLRModel

    model = stateful_onnx(tmp_path / "vad.onnx", rate=16000)
    done = _compile(model, "--framework", "onnx", "--input", "sr::int64", "--target", "native",
                    "--target", "aarch64", "--output", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    meta = _meta(tmp_path / "out" / "native")
    assert "sr one of [16000]" in meta["source"]["samples"]
    assert _meta(tmp_path / "out" / "aarch64")["verification"]["method"] == "qemu-aarch64"
    feed = {"x": np.full((1, 4), 0.5, np.float32), "state": np.zeros((1, 4), np.float32),
            "sr": np.array(16000, np.int64)}
    want = ort.InferenceSession(str(model)).run(None, feed)
    got = DLRModel(str(tmp_path / "out" / "native"), "cpu").run(feed)
    assert len(got) == 2
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    server = serve(tmp_path / "out" / "native")
    body = {"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4},
        {"name": "state", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4},
        {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]}]}
    answer = httpx.post(f"{server.url}/v2/models/vad/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert set(outputs) == {"prob", "state_out"}
    np.testing.assert_allclose(outputs["state_out"]["data"], want[1].ravel(), rtol=1e-5)


def test_a_compile_pod_fetches_the_sample_data_pinned_by_digest(tmp_path: Path,
                                                                registry: object) -> None:
    """spec.verify.sampleData in a CompilationJob: fetched like the model, its sha256
    checked, then used for verification; a wrong digest is refused before compiling."""
    import hashlib

    from neofleet.compiler.pod import run_request

    model = encoder_onnx(tmp_path / "encoder.onnx")
    samples = tmp_path / "tokens.npz"
    np.savez(samples, **_tokens(4))
    pinned = {"uri": f"file://{samples}",
              "sha256": hashlib.sha256(samples.read_bytes()).hexdigest()}
    request = {"target": {"name": "cpu", "device": "native", "backend": "onnxruntime"},
               "model": {"uri": f"file://{model}", "framework": "onnx"},
               "output": {"repository": f"oci://127.0.0.1:{registry.port}/t/encoder"},  # type: ignore[attr-defined]
               "verify": {"sampleData": pinned}}
    result = run_request(request, tmp_path / "scratch")
    assert result["ok"], result
    assert result["artifact"]["uri"].startswith(f"oci://127.0.0.1:{registry.port}/t/encoder@")  # type: ignore[attr-defined]
    request["verify"] = {"sampleData": {**pinned, "sha256": "0" * 64}}
    refused = run_request(request, tmp_path / "scratch2")
    assert not refused["ok"] and refused["reason"] == "ModelDigestMismatch", refused
    assert refused["message"].startswith(f"sample data file://{samples} has sha256 ")
