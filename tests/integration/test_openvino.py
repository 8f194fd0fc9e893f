"""The openvino backend: OpenVINO IR bundles built from the same ONNX graph as the other
candidates, fp32 recorded and enforced, verified like every candidate, served from a
read-only bundle with OpenVINO's compiled-model cache in the bundle cache, refused when
tampered with, and never starting OpenVINO's or ONNX Runtime's telemetry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE_ONNX

pytestmark = pytest.mark.integration


def _compile(out: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-m", "neofleet.cli", "compile", str(EXAMPLE_ONNX),
                           "--framework", "onnx", "--output", str(out), *args],
                          capture_output=True, text=True, timeout=900, env=env, check=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("openvino")
    home = work / "home"
    home.mkdir()
    done = _compile(work / "out", "--target", "native", "--backend", "openvino", home=home)
    assert done.returncode == 0, done.stderr
    # neofleet.telemetry: OpenVINO's telemetry keeps its client id under ~/intel, ONNX
    # Runtime's 1DS telemetry its device id under ~/.cache/Microsoft; a compile (ONNX
    # Runtime, OpenVINO and TVM candidates, verification children) must create neither
    assert not (home / "intel").exists()
    assert not (home / ".cache" / "Microsoft").exists()
    return work / "out" / "native"


def test_an_openvino_bundle_records_and_enforces_fp32(bundle: Path) -> None:
    import onnxruntime as ort

    from neofleet.runtime import DLRModel

    meta = json.loads((bundle / "compiled.meta").read_text())["Neofleet"]
    assert meta["backend"] == "openvino" and meta["verification"]["passed"]
    assert meta["backend_options"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert meta["backend_options"]["precision"] == "fp32"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"compiled.xml", "compiled.bin"} <= set(manifest["files"])
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(EXAMPLE_ONNX)).run(None, {"image": x})[0]
    got = DLRModel(str(bundle), "cpu").run([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_tampered_weights_file_is_refused_before_openvino_reads_it(
        bundle: Path, tmp_path: Path) -> None:
    import shutil

    from neofleet.bundle.errors import BundleIntegrityError
    from neofleet.runtime import DLRModel

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    weights = copy / "compiled.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="compiled.bin"):
        DLRModel(str(copy), "cpu")


def test_served_read_only_with_the_compiled_model_cached(bundle: Path, tmp_path: Path,
                                                         serve: object) -> None:
    import httpx

    server = serve(bundle, "--name", "cnn")  # type: ignore[operator]
    body = {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                        "data": [0.1] * 3072}]}
    answer = httpx.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [1, 10]
    cached = list((tmp_path / "cache" / "openvino").glob("*.blob"))   # NEOFLEET_CACHE
    assert cached, "OpenVINO's compiled model was not cached in the bundle cache"


def test_auto_weighs_openvino_and_aarch64_says_why_not(tmp_path: Path) -> None:
    done = _compile(tmp_path / "out", "--target", "native", "--target", "aarch64")
    assert done.returncode == 0, done.stderr
    native = json.loads((tmp_path / "out" / "native" / "compiled.meta").read_text())
    statuses = {c["backend"]: c for c in native["Neofleet"]["candidates"]}
    assert statuses["openvino"]["status"] in ("verified", "selected")
    assert statuses["openvino"]["benchmark"]["median_ms"] > 0
    arm = json.loads((tmp_path / "out" / "aarch64" / "compiled.meta").read_text())
    skipped = {c["backend"]: c for c in arm["Neofleet"]["candidates"]}["openvino"]
    assert skipped["status"] == "not-applicable" and "x86_64 only" in skipped["message"]
