"""Bundles through a real OCI registry (Debian's docker-registry), always by digest."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from neofleet.bundle import (
    ArtifactDigestError,
    BundleFormatError,
    RegistryError,
    open_bundle,
)
from neofleet.bundle.errors import ReferenceError_
from neofleet.bundle.oci import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    PushResult,
    pull_bundle,
    push_bundle,
    resolve_reference,
)
from tests.support.bundles import make_bundle
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.integration
pytest.importorskip("oras")


def _get(registry: RegistryServer, path: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(f"{registry.url}/v2/{path}")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def _manifest(registry: RegistryServer, repo: str, result: PushResult) -> dict[str, object]:
    raw = _get(registry, f"{repo}/manifests/{result.manifest_digest}", MANIFEST_MEDIA_TYPE)
    doc: dict[str, object] = json.loads(raw)
    return doc


def _layer_digest(registry: RegistryServer, repo: str, result: PushResult) -> str:
    layers = _manifest(registry, repo, result)["layers"]
    assert isinstance(layers, list)
    return str(layers[0]["digest"])


def _unique_bundle(tmp_path: Path, label: str, size: int = 0) -> Path:
    """A bundle nobody else pushed: blobs are shared across repositories in a registry."""
    data = f"{label}-{time.time_ns()}\n".encode() + os.urandom(size)
    return make_bundle(tmp_path / f"bundle-{label}", artifact_bytes=data).path


def test_push_then_pull_by_digest(registry: RegistryServer, tmp_path: Path) -> None:
    source = _unique_bundle(tmp_path, "roundtrip", 4096)
    result = push_bundle(source, f"oci://{registry.host}/models/roundtrip:v1")
    assert result.uri == f"oci://{registry.host}/models/roundtrip@{result.manifest_digest}"
    assert result.bundle_digest == open_bundle(source).digest
    assert result.tag == "v1"

    pulled = pull_bundle(result.uri, tmp_path / "pulled" / "b")
    assert pulled.path == tmp_path / "pulled" / "b"
    assert pulled.digest == result.bundle_digest
    assert open_bundle(pulled.path).digest == result.bundle_digest
    assert sorted(p.name for p in pulled.path.iterdir()) == sorted(p.name for p in source.iterdir())
    assert [p.name for p in (tmp_path / "pulled").iterdir()] == ["b"]


def test_artifact_layout(registry: RegistryServer, tmp_path: Path) -> None:
    source = _unique_bundle(tmp_path, "layout")
    result = push_bundle(source, f"oci://{registry.host}/models/layout:v1")
    doc = _manifest(registry, "models/layout", result)
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == MANIFEST_MEDIA_TYPE
    assert doc["artifactType"] == ARTIFACT_TYPE
    config, layers = doc["config"], doc["layers"]
    assert isinstance(config, dict) and isinstance(layers, list) and len(layers) == 1
    assert config["mediaType"] == CONFIG_MEDIA_TYPE
    assert layers[0]["mediaType"] == LAYER_MEDIA_TYPE
    assert layers[0]["annotations"] == {"org.opencontainers.image.title": "bundle.tar"}
    assert layers[0]["size"] == result.layer_size
    summary = json.loads(_get(registry, f"models/layout/blobs/{config['digest']}"))
    assert summary == {
        "bundle_digest": result.bundle_digest,
        "format": "neofleet.bundle/v1",
        "backend": "onnxruntime",
        "target": "linux-x86_64",
        "arch": "x86_64",
        "device_type": "cpu",
        "framework": "onnx",
    }
    tagged = _get(registry, "models/layout/manifests/v1", MANIFEST_MEDIA_TYPE)
    by_digest = f"models/layout/manifests/{result.manifest_digest}"
    assert tagged == _get(registry, by_digest, MANIFEST_MEDIA_TYPE)


def test_push_is_reproducible(registry: RegistryServer, tmp_path: Path) -> None:
    first = push_bundle(make_bundle(tmp_path / "a").path, f"oci://{registry.host}/models/same:v1")
    again = push_bundle(make_bundle(tmp_path / "a").path, f"oci://{registry.host}/models/same:v1")
    other = push_bundle(make_bundle(tmp_path / "b").path, f"oci://{registry.host}/models/same")
    assert first.manifest_digest == again.manifest_digest == other.manifest_digest
    assert first.bundle_digest == again.bundle_digest


def test_push_without_tag_is_by_digest_only(registry: RegistryServer, tmp_path: Path) -> None:
    result = push_bundle(_unique_bundle(tmp_path, "untagged"), f"oci://{registry.host}/m/untagged")
    assert result.tag is None
    try:
        tags = json.loads(_get(registry, "m/untagged/tags/list")).get("tags")
    except urllib.error.HTTPError as exc:  # distribution 2.8: a repository without tags
        assert exc.code == 404
        tags = None
    assert not tags
    assert pull_bundle(result.uri, tmp_path / "out").digest == result.bundle_digest


def test_resolve_tag_then_pull(registry: RegistryServer, tmp_path: Path) -> None:
    result = push_bundle(_unique_bundle(tmp_path, "tag"), f"oci://{registry.host}/m/tagged:v7")
    with pytest.raises(ReferenceError_, match="digest"):
        pull_bundle(f"oci://{registry.host}/m/tagged:v7", tmp_path / "out")
    resolved = resolve_reference(f"oci://{registry.host}/m/tagged:v7")
    assert resolved.uri == result.uri
    assert pull_bundle(str(resolved), tmp_path / "out").digest == result.bundle_digest


def test_push_to_a_digest_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    with pytest.raises(ReferenceError_):
        push_bundle(
            make_bundle(tmp_path / "b").path, f"oci://{registry.host}/m/x@sha256:{'0' * 64}"
        )


def test_pull_replaces_an_existing_bundle(registry: RegistryServer, tmp_path: Path) -> None:
    dest = make_bundle(tmp_path / "dest", artifact_bytes=b"old").path
    result = push_bundle(_unique_bundle(tmp_path, "replace"), f"oci://{registry.host}/m/replace")
    assert pull_bundle(result.uri, dest).digest == result.bundle_digest
    assert open_bundle(dest).digest == result.bundle_digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_pull_wrong_digest(registry: RegistryServer, tmp_path: Path) -> None:
    push_bundle(_unique_bundle(tmp_path, "wrong"), f"oci://{registry.host}/m/wrong:v1")
    dest = tmp_path / "out" / "b"
    with pytest.raises((ArtifactDigestError, RegistryError)) as info:
        pull_bundle(f"oci://{registry.host}/m/wrong@sha256:{'1' * 64}", dest)
    assert f"{registry.host}/v2/m/wrong/manifests/sha256:" in str(info.value)
    assert not dest.exists()


def test_tampered_layer_is_detected(registry: RegistryServer, tmp_path: Path) -> None:
    result = push_bundle(_unique_bundle(tmp_path, "tamper", 1000), f"oci://{registry.host}/m/t")
    blob = registry.blob_path(_layer_digest(registry, "m/t", result))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest can tell
    blob.write_bytes(bytes(data))
    dest = tmp_path / "out" / "b"
    with pytest.raises(ArtifactDigestError, match="hashes to"):
        pull_bundle(result.uri, dest)
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_layer_is_detected(registry: RegistryServer, tmp_path: Path) -> None:
    result = push_bundle(_unique_bundle(tmp_path, "short", 1000), f"oci://{registry.host}/m/s")
    blob = registry.blob_path(_layer_digest(registry, "m/s", result))
    blob.write_bytes(blob.read_bytes()[:-512])
    dest = tmp_path / "out" / "b"
    with pytest.raises((ArtifactDigestError, RegistryError)):
        pull_bundle(result.uri, dest)
    assert list((tmp_path / "out").iterdir()) == []


def test_tampered_manifest_is_detected(registry: RegistryServer, tmp_path: Path) -> None:
    result = push_bundle(_unique_bundle(tmp_path, "manifest"), f"oci://{registry.host}/m/man")
    blob = registry.blob_path(result.manifest_digest)
    raw = blob.read_bytes()
    assert b'"bundle.tar"' in raw
    blob.write_bytes(raw.replace(b'"bundle.tar"', b'"bundle.taz"'))
    dest = tmp_path / "out" / "b"
    with pytest.raises(ArtifactDigestError, match="manifest hashes to"):
        pull_bundle(result.uri, dest)
    assert not dest.exists()


def test_not_a_bundle_artifact(registry: RegistryServer, tmp_path: Path) -> None:
    import oras.provider

    payload = tmp_path / "hello.txt"
    payload.write_text("hello\n")
    client = oras.provider.Registry(hostname=registry.host, insecure=True)
    response = client.push(
        f"{registry.host}/m/other:v1",
        files=[str(payload)],
        disable_path_validation=True,
        quiet=True,
    )
    digest = response.headers["Docker-Content-Digest"]
    with pytest.raises(BundleFormatError, match="artifactType"):
        pull_bundle(f"oci://{registry.host}/m/other@{digest}", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pull_unknown_repository(registry: RegistryServer, tmp_path: Path) -> None:
    ref = f"oci://{registry.host}/no/such/repo@sha256:{'2' * 64}"
    with pytest.raises(RegistryError, match="HTTP 404") as info:
        pull_bundle(ref, tmp_path / "out")
    assert f"http://{registry.host}/v2/no/such/repo/manifests/" in str(info.value)
    assert not isinstance(info.value, ArtifactDigestError)
    assert not (tmp_path / "out").exists()


def test_unreachable_registry_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"http://127.0.0.1:{port}/v2/"):
        pull_bundle(f"oci://127.0.0.1:{port}/m/x@sha256:{'3' * 64}", tmp_path / "out")
    with pytest.raises(RegistryError, match=f"127.0.0.1:{port}"):
        push_bundle(make_bundle(tmp_path / "b").path, f"oci://127.0.0.1:{port}/m/x:v1")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


def test_large_bundle_round_trip(registry: RegistryServer, tmp_path: Path) -> None:
    size = 50 << 20
    source = _unique_bundle(tmp_path, "large", size)
    ref = f"oci://{registry.host}/models/large:v1"

    started = time.perf_counter()
    result = push_bundle(source, ref)
    pushed = time.perf_counter()
    again = push_bundle(source, ref)  # every blob is there already
    repushed = time.perf_counter()
    pulled = pull_bundle(result.uri, tmp_path / "pulled")
    done = time.perf_counter()

    assert again.manifest_digest == result.manifest_digest
    assert pulled.digest == result.bundle_digest
    assert result.layer_size > size
    print(
        f"\n50 MiB bundle: push {pushed - started:.2f} s, re-push {repushed - pushed:.2f} s, "
        f"pull (verified + unpacked) {done - repushed:.2f} s"
    )
