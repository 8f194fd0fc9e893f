"""Push bundles to an OCI registry and pull them back, addressed by digest.

A bundle travels as one OCI 1.1 artifact::

    image manifest   application/vnd.oci.image.manifest.v1+json, schemaVersion 2,
    │                artifactType application/vnd.neofleet.bundle.v1
    ├── config       application/vnd.neofleet.bundle.config.v1+json
    │                {"bundle_digest", "format", "backend", "target", "arch",
    │                 "device_type", "framework"}: a summary for people and tools
    └── one layer    application/vnd.neofleet.bundle.layer.v1.tar
                     the reproducible tarball of ``pack_bundle``, titled "bundle.tar"

Every byte of the artifact is a function of the bundle's content (compact sorted JSON,
fixed layer title, reproducible tarball), so the same bundle always has the same manifest
digest and pushing it again uploads nothing new.

Pulling trusts nothing the registry says: the manifest bytes must hash to the digest of
the reference, the config and the layer must match their descriptors' size and sha256
(oras-py checks neither), every unpacked file must match ``manifest.json``, and the
bundle digest must be the one the config names. The bundle is staged beside ``dest`` and
moved into place only when all of that holds.

References look like ``oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]``. Pulls need the
digest; ``resolve_reference`` turns a tag into one. Plain http is used by default only for
127.0.0.1, localhost and [::1]. oras-py (imported only when a registry is contacted)
does the HTTP, the blob uploads and the registry auth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from neofleet.bundle.errors import (
    ArtifactDigestError,
    BundleFormatError,
    ReferenceError_,
    RegistryError,
)
from neofleet.bundle.layout import Bundle, _replace
from neofleet.bundle.manifest import sha256_file
from neofleet.bundle.pack import MAX_BUNDLE_BYTES, pack_bundle, unpack_bundle

log = logging.getLogger(__name__)

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.neofleet.bundle.v1"
CONFIG_MEDIA_TYPE = "application/vnd.neofleet.bundle.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.neofleet.bundle.layer.v1.tar"
TITLE_ANNOTATION = "org.opencontainers.image.title"
LAYER_TITLE = "bundle.tar"

_CHUNKED_ABOVE = 8 << 20  # oras' monolithic upload reads the whole file into memory
_CHUNK_SIZE = 16 << 20
_MAX_MANIFEST_BYTES = 4 << 20
_MAX_CONFIG_BYTES = 1 << 20
_MAX_LAYER_BYTES = MAX_BUNDLE_BYTES + (64 << 20)  # tar headers on top of the files
_PING_TIMEOUT_S = 10.0
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"oci://(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
    rf"/(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


# ---------------------------------------------------------------------------- references


@dataclass(frozen=True)
class OciReference:
    """A parsed ``oci://`` reference; ``registry`` is ``host[:port]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        """The registry's host name, without the port."""
        if self.registry.startswith("["):
            return self.registry[: self.registry.index("]") + 1]
        return self.registry.partition(":")[0]

    @property
    def uri(self) -> str:
        """The canonical, immutable form ``oci://host/repo@sha256:…`` (tag dropped)."""
        if self.digest is None:
            raise ReferenceError_(f"{self} names no digest")
        return f"oci://{self.registry}/{self.repository}@{self.digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"oci://{self.registry}/{self.repository}{tag}{digest}"


def parse_reference(ref: str) -> OciReference:
    """Parse ``oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]``; raise ReferenceError_ if bad."""
    match = _REFERENCE.fullmatch(ref) if isinstance(ref, str) else None
    if match is None:
        raise ReferenceError_(
            f"malformed reference {ref!r}: expected oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX] "
            "(repository in lower case)"
        )
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise ReferenceError_(f"malformed reference {ref!r}: port {port} out of range")
    if len(match["repo"]) > 255:
        raise ReferenceError_(f"malformed reference {ref!r}: repository longer than 255")
    registry = match["host"].lower() + (f":{port}" if port is not None else "")
    return OciReference(registry, match["repo"], match["tag"], match["digest"])


# ---------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushResult:
    """Where a pushed bundle now lives: pull it back with ``uri``."""

    manifest_digest: str
    uri: str
    bundle_digest: str
    tag: str | None
    layer_size: int


@dataclass(frozen=True)
class _Staged:
    """The artifact's blobs on local disk plus its manifest bytes."""

    bundle: Bundle
    config_path: Path
    config: dict[str, Any]
    layer_path: Path
    layer: dict[str, Any]
    manifest: bytes

    @property
    def digest(self) -> str:
        return _sha256_bytes(self.manifest)


def push_bundle(bundle_dir: Path, ref: str, *, insecure: bool | None = None) -> PushResult:
    """Verify and pack ``bundle_dir``, upload it as one artifact, tag it if ``ref`` has a tag.

    ``insecure`` (plain http) defaults to True only for a local registry.
    """
    target = parse_reference(ref)
    if target.digest is not None:
        raise ReferenceError_(f"{ref}: push to a tag or a bare repository, not to a digest")
    with tempfile.TemporaryDirectory(prefix="neofleet-push-") as tmp:
        staged = _stage(Path(bundle_dir), Path(tmp))
        with _connect(target, insecure) as remote:
            remote.upload_blob(staged.config_path, staged.config)
            remote.upload_blob(staged.layer_path, staged.layer)
            remote.put_manifest(staged.manifest, target.tag or staged.digest, staged.digest)
    uri = replace(target, digest=staged.digest).uri
    log.info("pushed bundle %s as %s", staged.bundle.digest, uri)
    return PushResult(staged.digest, uri, staged.bundle.digest, target.tag, staged.layer["size"])


MODEL_ARTIFACT_TYPE = "application/vnd.neofleet.model.v1"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


def push_file(path: Path, ref: str, *, insecure: bool | None = None) -> str:
    """Upload one file (a model) as a single-layer OCI artifact; its ``oci://…@sha256``
    URI, which ``pull_file`` and a CompilationJob's ``spec.model.uri`` accept."""
    target = parse_reference(ref)
    if target.digest is not None:
        raise ReferenceError_(f"{ref}: push to a tag or a bare repository, not to a digest")
    with tempfile.TemporaryDirectory(prefix="neofleet-push-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(b"{}")
        config = _descriptor(EMPTY_MEDIA_TYPE, config_path)
        layer = _descriptor("application/octet-stream", Path(path))
        layer["annotations"] = {TITLE_ANNOTATION: Path(path).name}
        manifest = _canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                                    "artifactType": MODEL_ARTIFACT_TYPE, "config": config,
                                    "layers": [layer]})
        digest = _sha256_bytes(manifest)
        with _connect(target, insecure) as remote:
            remote.upload_blob(config_path, config)
            remote.upload_blob(Path(path), layer)
            remote.put_manifest(manifest, target.tag or digest, digest)
    return replace(target, digest=digest).uri


def _stage(bundle_dir: Path, tmp: Path) -> _Staged:
    layer_path = tmp / LAYER_TITLE
    bundle = pack_bundle(bundle_dir, layer_path)  # verifies every file first (open_bundle)
    config_path = tmp / "config.json"
    config_path.write_bytes(_canonical_json(_summary(bundle)))
    config = _descriptor(CONFIG_MEDIA_TYPE, config_path)
    layer = _descriptor(LAYER_MEDIA_TYPE, layer_path)
    layer["annotations"] = {TITLE_ANNOTATION: LAYER_TITLE}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": [layer],
    }
    return _Staged(bundle, config_path, config, layer_path, layer, _canonical_json(manifest))


def _summary(bundle: Bundle) -> dict[str, str]:
    requirements = bundle.meta.requirements
    return {
        "bundle_digest": bundle.digest,
        "format": bundle.manifest.format,
        "backend": bundle.manifest.backend,
        "target": requirements.target_device,
        "arch": requirements.target_arch,
        "device_type": requirements.target_device_type,
        "framework": bundle.meta.neofleet.framework,
    }


def _descriptor(media_type: str, path: Path) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + sha256_file(path),
        "size": path.stat().st_size,
    }


def _canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class _Blob:
    """A descriptor from a manifest, checked for shape."""

    media_type: str
    digest: str
    size: int


def pull_bundle(ref: str, dest: Path, *, insecure: bool | None = None) -> Bundle:
    """Fetch the bundle ``ref`` names by digest, verify everything, place it at ``dest``.

    Raises ReferenceError_ when ``ref`` has no digest, ArtifactDigestError when any byte
    differs from what the digest promises, BundleFormatError when the artifact is not a
    bundle, RegistryError when the registry cannot be reached or refuses. ``dest`` is
    replaced only by a fully verified bundle.
    """
    source = parse_reference(ref)
    if source.digest is None:
        raise ReferenceError_(
            f"{ref}: a pull needs a digest (oci://…@sha256:…); "
            "resolve_reference() turns a tag into one"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        _connect(source, insecure) as remote,
        tempfile.TemporaryDirectory(prefix=f".{dest.name}.pull-", dir=dest.parent) as tmp,
    ):
        config, layer = _check_manifest(remote.get_manifest(source.digest), source.uri)
        summary = _json_object(remote.get_small_blob(config), config.digest)
        bundle = _fetch_bundle(remote, layer, Path(tmp))
        _check_summary(bundle, summary, source.uri)
        _replace(bundle.path, dest)
    log.info("pulled bundle %s from %s", bundle.digest, source.uri)
    return replace(bundle, path=dest)


def pull_file(ref: str, folder: Path, *, insecure: bool | None = None) -> Path:
    """Fetch the single-layer artifact ``ref`` names by digest (a model file pushed with
    ``oras push``), verify manifest and layer digests, and return the file in ``folder``
    (named by its ``org.opencontainers.image.title``, reduced to a base name)."""
    source = parse_reference(ref)
    if source.digest is None:
        raise ReferenceError_(f"{ref}: a pull needs a digest (oci://…@sha256:…)")
    with _connect(source, insecure) as remote:
        doc = remote.get_manifest(source.digest)
        layers = doc.get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise BundleFormatError(f"{source.uri}: a model artifact has exactly one layer")
        layer = _blob(layers[0], str(layers[0].get("mediaType")), _MAX_LAYER_BYTES, source.uri)
        title = (layers[0].get("annotations") or {}).get("org.opencontainers.image.title", "")
        name = Path(str(title)).name
        path = Path(folder) / (name if name not in ("", ".", "..") else "model")
        remote.download_blob(layer, path)
    return path


def resolve_reference(ref: str, *, insecure: bool | None = None) -> OciReference:
    """Return ``ref`` with the digest its tag points to now (unchanged if it has one)."""
    source = parse_reference(ref)
    if source.digest is not None:
        return source
    if source.tag is None:
        raise ReferenceError_(f"{ref}: names neither a tag nor a digest")
    with _connect(source, insecure) as remote:
        digest = _sha256_bytes(remote.get_manifest_bytes(source.tag))
    log.warning("resolved %s to %s; pull by digest to pin it", ref, digest)
    return replace(source, digest=digest)


def _check_manifest(doc: dict[str, Any], uri: str) -> tuple[_Blob, _Blob]:
    if doc.get("schemaVersion") != 2 or doc.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise BundleFormatError(f"{uri}: not an OCI image manifest")
    if doc.get("artifactType") != ARTIFACT_TYPE:
        raise BundleFormatError(
            f"{uri}: artifactType {doc.get('artifactType')!r} is not {ARTIFACT_TYPE}"
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise BundleFormatError(f"{uri}: a bundle artifact has exactly one layer")
    config = _blob(doc.get("config"), CONFIG_MEDIA_TYPE, _MAX_CONFIG_BYTES, uri)
    return config, _blob(layers[0], LAYER_MEDIA_TYPE, _MAX_LAYER_BYTES, uri)


def _blob(doc: Any, media_type: str, max_size: int, uri: str) -> _Blob:
    if not isinstance(doc, dict) or doc.get("mediaType") != media_type:
        raise BundleFormatError(f"{uri}: expected a {media_type} descriptor")
    digest, size = doc.get("digest"), doc.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BundleFormatError(f"{uri}: {media_type} descriptor has no sha256 digest")
    if type(size) is not int or not 0 <= size <= max_size:
        raise BundleFormatError(f"{uri}: {media_type} descriptor has a bad size {size!r}")
    return _Blob(media_type, digest, size)


def _fetch_bundle(remote: _Remote, layer: _Blob, tmp: Path) -> Bundle:
    tar_path = tmp / LAYER_TITLE
    remote.download_blob(layer, tar_path)
    bundle = unpack_bundle(tar_path, tmp / "bundle")  # checks every file against manifest
    tar_path.unlink()
    return bundle


def _check_summary(bundle: Bundle, summary: dict[str, Any], uri: str) -> None:
    named = summary.get("bundle_digest")
    if named != bundle.digest:
        raise ArtifactDigestError(
            f"{uri}: the layer holds bundle {bundle.digest} but the config names {named!r}"
        )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BundleFormatError(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleFormatError(f"{what}: not a JSON object")
    return doc


def _verify(what: str, blob: _Blob, size: int, digest: str) -> None:
    if size != blob.size:
        raise ArtifactDigestError(f"{what}: got {size} bytes, the manifest says {blob.size}")
    if digest != blob.digest:
        raise ArtifactDigestError(f"{what}: content hashes to {digest}, expected {blob.digest}")


# ---------------------------------------------------------------------------- registry


@contextmanager
def _http(what: str) -> Iterator[None]:
    """Turn transport failures (and oras' ValueErrors) into RegistryError naming ``what``."""
    import requests

    try:
        yield
    except (requests.RequestException, ValueError) as exc:
        raise RegistryError(f"{what}: {exc}") from exc


def _expect(response: Any, what: str, *ok: int) -> None:
    status = int(response.status_code)
    if status not in (ok or (200,)):
        raise RegistryError(f"{what}: HTTP {status}{_error_detail(response)}")


def _error_detail(response: Any) -> str:
    try:
        errors = response.json().get("errors", [])
        words = [f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors]
    except (ValueError, AttributeError, TypeError):
        return ""
    return f" ({'; '.join(words)})" if words else ""


@contextmanager
def _connect(ref: OciReference, insecure: bool | None) -> Iterator[_Remote]:
    import oras.container
    import oras.provider

    plain = ref.host in _LOCAL_HOSTS if insecure is None else insecure
    client = oras.provider.Registry(hostname=ref.registry, insecure=plain)
    namespace, _, name = ref.repository.rpartition("/")
    container = oras.container.Container(name, registry=ref.registry)
    container.namespace = namespace or None  # set, not parsed: "a.b/c" is not a host
    remote = _Remote(client, container, f"{client.prefix}://{ref.registry}", ref.repository)
    try:
        remote.ping()
        client.auth.load_configs(container)
        yield remote
    finally:
        client.session.close()


@dataclass(frozen=True)
class _Remote:
    """One repository of one registry, through an ``oras.provider.Registry``."""

    client: Any
    container: Any
    root: str
    repository: str

    def url(self, kind: str, reference: str) -> str:
        return f"{self.root}/v2/{self.repository}/{kind}/{reference}"

    def ping(self) -> None:
        """Fail fast (oras retries a refused connection for two minutes)."""
        url = f"{self.root}/v2/"
        with _http(f"GET {url}"):
            response = self.client.session.get(url, timeout=_PING_TIMEOUT_S)
        _expect(response, f"GET {url}", 200, 401)

    def upload_blob(self, path: Path, descriptor: dict[str, Any]) -> None:
        what = f"upload to {self.url('blobs', descriptor['digest'])}"
        with _http(what):
            response = self.client.upload_blob(
                str(path),
                self.container,
                descriptor,
                do_chunked=descriptor["size"] > _CHUNKED_ABOVE,
                chunk_size=_CHUNK_SIZE,
            )
        _expect(response, what, 200, 201, 202)

    def put_manifest(self, body: bytes, reference: str, digest: str) -> None:
        url = self.url("manifests", reference)
        headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
        with _http(f"PUT {url}"):
            response = self.client.do_request(url, "PUT", data=body, headers=headers)
        _expect(response, f"PUT {url}", 200, 201)
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise ArtifactDigestError(f"PUT {url}: registry stored {stored}, sent {digest}")

    def get_manifest_bytes(self, reference: str) -> bytes:
        url = self.url("manifests", reference)
        headers = {"Accept": MANIFEST_MEDIA_TYPE}
        with _http(f"GET {url}"):
            response = self.client.do_request(url, "GET", headers=headers, stream=True)
            with response:
                _expect(response, f"GET {url}")
                return _read_capped(response, _MAX_MANIFEST_BYTES, url)

    def get_manifest(self, digest: str) -> dict[str, Any]:
        raw = self.get_manifest_bytes(digest)
        url = self.url("manifests", digest)
        actual = _sha256_bytes(raw)
        if actual != digest:
            raise ArtifactDigestError(f"GET {url}: manifest hashes to {actual}, not {digest}")
        return _json_object(raw, url)

    def get_small_blob(self, blob: _Blob) -> bytes:
        url = self.url("blobs", blob.digest)
        with _http(f"GET {url}"):
            response = self.client.get_blob(self.container, blob.digest, stream=True)
            with response:
                _expect(response, f"GET {url}")
                raw = _read_capped(response, blob.size, url)
        _verify(url, blob, len(raw), _sha256_bytes(raw))
        return raw

    def download_blob(self, blob: _Blob, path: Path) -> None:
        url = self.url("blobs", blob.digest)
        with _http(f"GET {url}"):
            response = self.client.get_blob(self.container, blob.digest, stream=True)
            with response:
                _expect(response, f"GET {url}")
                size, digest = _stream_to(response, path, blob.size, url)
        _verify(url, blob, size, digest)


def _read_capped(response: Any, limit: int, url: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(chunk_size=1 << 16):
        data += chunk
        if len(data) > limit:
            raise ArtifactDigestError(f"GET {url}: more than the expected {limit} bytes")
    return bytes(data)


def _stream_to(response: Any, path: Path, limit: int, url: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        for chunk in response.iter_content(chunk_size=1 << 20):
            size += len(chunk)
            if size > limit:
                raise ArtifactDigestError(f"GET {url}: more than the declared {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return size, "sha256:" + digest.hexdigest()
