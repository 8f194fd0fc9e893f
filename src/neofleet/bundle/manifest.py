"""``manifest.json``: every file of a bundle with its size and sha256.

The manifest also names the backend and the artifact file the runtime must load, so a
loader is chosen from verified data, never from file names found on disk. The bundle's
content address is the sha256 of the manifest's canonical bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neofleet.bundle.errors import (
    BundleFormatError,
    DigestMismatchError,
    MissingFileError,
    UnexpectedFileError,
)

MANIFEST_NAME = "manifest.json"
FORMAT = "neofleet.bundle/v1"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def check_file_name(name: str) -> str:
    """Bundles are flat: a file name is one safe path component."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise BundleFormatError(f"unsafe bundle file name {name!r}")
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds; ``digest`` is its content address."""

    backend: str
    artifact: str
    files: Mapping[str, FileEntry]
    format: str = FORMAT

    def to_bytes(self) -> bytes:
        doc = {
            "format": self.format,
            "backend": self.backend,
            "artifact": self.artifact,
            "files": {
                name: {"size": e.size, "sha256": e.sha256} for name, e in sorted(self.files.items())
            },
        }
        return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleFormatError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleFormatError(f"{MANIFEST_NAME}: not a {FORMAT} manifest")
        files_doc = doc.get("files")
        if not isinstance(files_doc, dict) or not files_doc:
            raise BundleFormatError(f"{MANIFEST_NAME}: 'files' must be a non-empty object")
        files = {check_file_name(str(n)): _entry(str(n), e) for n, e in files_doc.items()}
        if MANIFEST_NAME in files:
            raise BundleFormatError(f"{MANIFEST_NAME} must not list itself")
        backend, artifact = doc.get("backend"), doc.get("artifact")
        if not isinstance(backend, str) or not isinstance(artifact, str):
            raise BundleFormatError(f"{MANIFEST_NAME}: 'backend' and 'artifact' are required")
        if artifact not in files:
            raise BundleFormatError(f"{MANIFEST_NAME}: artifact {artifact!r} is not listed")
        return cls(backend=backend, artifact=artifact, files=files)


def _entry(name: str, doc: Any) -> FileEntry:
    if not isinstance(doc, dict):
        raise BundleFormatError(f"{MANIFEST_NAME}: entry for {name} is not an object")
    size, sha = doc.get("size"), doc.get("sha256")
    if not isinstance(size, int) or size < 0 or not isinstance(sha, str) or not _SHA256.match(sha):
        raise BundleFormatError(f"{MANIFEST_NAME}: entry for {name} needs size and sha256")
    return FileEntry(size=size, sha256=sha)


def build_manifest(directory: Path, backend: str, artifact: str) -> Manifest:
    """Describe every regular file of ``directory`` (the manifest itself excluded)."""
    files = {p.name: FileEntry(p.stat().st_size, sha256_file(p)) for p in _entries(directory)}
    return Manifest(backend=backend, artifact=artifact, files=files)


def _entries(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST_NAME:
            continue
        check_file_name(path.name)
        if path.is_symlink() or not path.is_file():
            raise UnexpectedFileError(path.name, "bundles hold regular files only")
        yield path


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        raise MissingFileError(MANIFEST_NAME, f"no manifest in {directory}")
    return Manifest.from_bytes(path.read_bytes())


def verify_directory(directory: Path) -> Manifest:
    """Check every file against the manifest before anything is loaded.

    Raises MissingFileError, UnexpectedFileError or DigestMismatchError naming the file.
    """
    manifest = read_manifest(directory)
    present = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST_NAME:
            continue
        if path.name not in manifest.files:
            raise UnexpectedFileError(path.name, "present in the bundle but not in the manifest")
        if path.is_symlink() or not path.is_file():
            raise UnexpectedFileError(path.name, "not a regular file")
        present[path.name] = path
    for name, entry in sorted(manifest.files.items()):
        found = present.get(name)
        if found is None:
            raise MissingFileError(name, "listed in the manifest but missing")
        _check_entry(name, found, entry)
    return manifest


def _check_entry(name: str, path: Path, entry: FileEntry) -> None:
    size = path.stat().st_size
    if size != entry.size:
        raise DigestMismatchError(name, f"size {size} != manifest {entry.size}")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise DigestMismatchError(name, f"sha256 {actual} != manifest {entry.sha256}")
