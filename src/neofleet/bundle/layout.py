"""Write and open bundle directories.

A bundle is written into a staging folder beside its destination and renamed into place
only when complete, so a failed compile never leaves a half-written bundle. Opening a
bundle verifies every digest before the meta is even parsed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neofleet.bundle.errors import MissingFileError, UnexpectedFileError
from neofleet.bundle.manifest import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    check_file_name,
    verify_directory,
)
from neofleet.bundle.meta import GRAPH_NAME, META_NAME, CompiledMeta

_RESERVED = {MANIFEST_NAME, META_NAME, GRAPH_NAME}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory."""

    path: Path
    manifest: Manifest
    meta: CompiledMeta

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def artifact_path(self) -> Path:
        return self.path / self.manifest.artifact


def open_bundle(path: Path | str) -> Bundle:
    """Verify every file's size and sha256, then parse the meta."""
    directory = Path(path)
    manifest = verify_directory(directory)
    if META_NAME not in manifest.files:
        raise MissingFileError(META_NAME, "not listed in the manifest")
    meta = CompiledMeta.from_bytes((directory / META_NAME).read_bytes())
    return Bundle(path=directory, manifest=manifest, meta=meta)


def snapshot_bundle(source: Path | str, private_dir: Path) -> Bundle:
    """Copy a bundle into ``private_dir`` (which only this process may write) and verify the
    copy, so what is loaded afterwards is exactly what was verified: nothing can swap a
    file between the check and the load. Symlinks and non-regular entries are refused."""
    src = Path(source)
    if not src.is_dir():
        raise MissingFileError(str(src), "not a bundle directory")
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        check_file_name(entry.name)
        if entry.is_symlink() or not entry.is_file():
            raise UnexpectedFileError(entry.name, "bundles hold regular files only")
        shutil.copyfile(entry, private_dir / entry.name, follow_symlinks=False)
    return open_bundle(private_dir)


def write_bundle(
    dest: Path,
    *,
    files: Mapping[str, Path],
    artifact: str,
    backend: str,
    meta: CompiledMeta,
    graph: Mapping[str, Any],
) -> Bundle:
    """Stage the bundle beside ``dest`` and move it into place atomically.

    ``files`` maps bundle file names to source paths (copied); ``artifact`` is the one the
    runtime loads. An existing ``dest`` is replaced only once the new bundle is complete.
    """
    for name in files:
        if check_file_name(name) in _RESERVED:
            raise ValueError(f"{name} is written by write_bundle itself")
    if artifact not in files:
        raise ValueError(f"artifact {artifact!r} is not among the files")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(dest)
    try:
        for name, source in files.items():
            shutil.copyfile(source, staging / name)
        (staging / META_NAME).write_bytes(meta.to_bytes())
        (staging / GRAPH_NAME).write_text(json.dumps(graph, indent=2, sort_keys=True) + "\n")
        manifest = build_manifest(staging, backend=backend, artifact=artifact)
        (staging / MANIFEST_NAME).write_bytes(manifest.to_bytes())
        _replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_bundle(dest)


def staging_dir(dest: Path) -> Path:
    """A private folder beside ``dest``, readable by all once moved into place.

    mkdtemp makes 0700 folders; a bundle pulled by root for a non-root runtime must be
    readable, so the folder gets 0755 (files are written 0644 under the usual umask).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    staging.chmod(0o755)
    return staging


def _replace(staging: Path, dest: Path) -> None:
    if not dest.exists():
        staging.replace(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    dest.replace(old / "b")
    staging.replace(dest)
    shutil.rmtree(old, ignore_errors=True)
