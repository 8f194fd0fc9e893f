"""How a compile pod gets its model: OCI by digest from a real registry, https from a real
TLS server, s3 from a real S3-compatible server that checks signatures, pvc and file paths,
and the sha256 check."""

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
    with pytest.raises(ModelFetchError, match="'gs' are not supported"):
        fetch_model({"uri": "gs://bucket/m.onnx"}, tmp_path / "w")


def test_an_https_model_is_downloaded_and_checked(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A real TLS server on 127.0.0.1 with a certificate made by openssl, trusted through
    SSL_CERT_FILE as a pod would trust its cluster's CA bundle."""
    import http.server
    import ssl
    import subprocess
    import threading

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    site = tmp_path / "site"
    site.mkdir()
    (site / "m.onnx").write_bytes(b"onnx-bytes")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        url = f"https://127.0.0.1:{server.server_address[1]}/m.onnx"
        sha = hashlib.sha256(b"onnx-bytes").hexdigest()
        assert fetch_model({"uri": url, "sha256": sha}, tmp_path / "dl").read_bytes() == \
            b"onnx-bytes"
        with pytest.raises(ModelFetchError, match="cannot download"):
            fetch_model({"uri": url.replace("m.onnx", "missing.onnx")}, tmp_path / "dl2")
    finally:
        server.shutdown()
        server.server_close()


def test_an_s3_model_is_fetched_with_a_sigv4_signed_request(
        s3_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks the signature: a wrong secret and an anonymous request get 403."""
    data = b"\x08\x07" + bytes(range(256)) * 64
    s3_store.put_object("models", "team a/m v1.onnx", data)
    uri = "s3://models/team a/m v1.onnx"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_store.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_store.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store.credentials.secret_key)
    fetched = fetch_model({"uri": uri, "sha256": hashlib.sha256(data).hexdigest()},
                          tmp_path / "ok")
    assert fetched.name == "m v1.onnx" and fetched.read_bytes() == data
    with pytest.raises(ModelFetchError, match="HTTP 404 NoSuchKey"):
        fetch_model({"uri": "s3://models/missing.onnx"}, tmp_path / "missing")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store.credentials.secret_key + "x")
    with pytest.raises(ModelFetchError, match="HTTP 403 SignatureDoesNotMatch") as refused:
        fetch_model({"uri": uri}, tmp_path / "bad")
    assert uri in str(refused.value)
    assert not list((tmp_path / "bad").iterdir()), "nothing half-written"
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ModelFetchError, match="HTTP 403"):
        fetch_model({"uri": uri}, tmp_path / "anon")
