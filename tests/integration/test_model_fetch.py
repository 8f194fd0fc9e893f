"""How a compile pod gets its model: OCI by digest from a real registry, pvc and file
paths, and the sha256 check."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from neofleet.bundle.oci import push_file
from neofleet.compiler.pod import ModelDigestError, ModelFetchError, fetch_model

pytestmark = pytest.mark.integration


def test_a_model_pushed_as_an_artifact_is_pulled_by_digest_and_checked(
        registry: Any, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07" + bytes(range(256)) * 100)
    uri = push_file(model, f"oci://127.0.0.1:{registry.port}/models/m:v1")
    assert "@sha256:" in uri
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    fetched = fetch_model({"uri": uri, "sha256": sha}, tmp_path / "fetched")
    assert fetched.name == "model.onnx" and fetched.read_bytes() == model.read_bytes()
    with pytest.raises(ModelDigestError, match="the spec says"):
        fetch_model({"uri": uri, "sha256": "0" * 64}, tmp_path / "again")


def test_pvc_and_file_models_and_refusals(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    claim = tmp_path / "claims" / "store"
    claim.mkdir(parents=True)
    (claim / "m.onnx").write_bytes(b"model")
    monkeypatch.setenv("NEOFLEET_PVC_ROOT", str(tmp_path / "claims"))
    assert fetch_model({"uri": "pvc://store/m.onnx"}, tmp_path / "x").read_bytes() == b"model"
    assert fetch_model({"uri": f"file://{claim}/m.onnx"}, tmp_path / "y").name == "m.onnx"
    with pytest.raises(ModelFetchError, match="not found"):
        fetch_model({"uri": "pvc://store/missing.onnx"}, tmp_path / "z")
    with pytest.raises(ModelFetchError, match="'s3' are not supported"):
        fetch_model({"uri": "s3://bucket/m.onnx"}, tmp_path / "w")
