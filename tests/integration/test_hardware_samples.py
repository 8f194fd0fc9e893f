"""``neofleet serve`` runs the verification samples of a bundle that was not verified on
hardware before it reports ready, and exits 1 when they do not match (the smoke run of a
GPU bundle compiled without its GPU). Shown here with small CPU bundles that carry the
same record, so it runs on any host."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle.meta import NOT_RUN_NO_GPU, CompiledMeta
from tests.integration.conftest import SERVER_W, ServedModel, matmul_model

pytestmark = pytest.mark.integration


def _samples(scale: float) -> bytes:
    from neofleet.runtime.samples import write_samples

    rng = np.random.default_rng(3)
    inputs = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(2)]
    refs = [[(s["x"] @ SERVER_W * scale).astype(np.float32)] for s in inputs]
    buffer = io.BytesIO()
    write_samples(buffer, inputs, refs)  # np.savez writes to any binary file
    return buffer.getvalue()


def _unverified_meta(with_samples: bool) -> CompiledMeta:
    from tests.support.bundles import make_meta

    meta = make_meta()
    verification = meta.neofleet.verification.model_copy(update={
        "passed": False, "method": NOT_RUN_NO_GPU, "hardware_verified": False, "samples": 2,
        "rtol": 1e-4, "atol": 1e-5})
    options = {"verification_samples": "verification.npz"} if with_samples else {}
    return meta.model_copy(update={"neofleet": meta.neofleet.model_copy(update={
        "verification": verification, "backend_options": options})})


def _bundle(dest: Path, scale: float | None) -> Path:
    from tests.support.bundles import make_bundle

    extra = {"verification.npz": _samples(scale)} if scale is not None else {}
    return make_bundle(dest, artifact_bytes=matmul_model(), extra_files=extra,
                       meta=_unverified_meta(scale is not None)).path


def test_matching_samples_let_the_server_become_ready(
        tmp_path: Path, serve: Callable[..., ServedModel]) -> None:
    server = serve(_bundle(tmp_path / "good", 1.0))
    assert "hardware verification: 2 samples match" in server.log_text()
    reply = server.client.post("/v2/models/good/infer", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert reply.status_code == 200


@pytest.mark.parametrize(("scale", "message"), [
    (1.5, "HardwareVerificationFailed: sample 0, output 0 differs from the reference"),
    (None, "HardwareVerificationFailed: the bundle was not verified on hardware"),
])
def test_samples_that_do_not_match_end_the_server_with_the_reason(
        tmp_path: Path, serve: Callable[..., ServedModel], scale: float | None,
        message: str) -> None:
    server = serve(_bundle(tmp_path / "bad", scale), ready=False)
    assert server.wait_ready(timeout=60) is False
    assert server.wait_exit() == 1
    assert message in server.log_text()
