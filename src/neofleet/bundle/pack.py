"""Pack a bundle into one reproducible tarball and unpack one safely.

Packing verifies the bundle first; the tarball holds only regular files with fixed
owner, mode and mtime, so the same bundle always gives the same bytes (and digest).
Unpacking accepts only flat regular files with safe names, stages them, verifies the
manifest, and only then moves the bundle into place.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from neofleet.bundle.errors import BundleFormatError, UnexpectedFileError
from neofleet.bundle.layout import Bundle, _replace, open_bundle, staging_dir
from neofleet.bundle.manifest import MANIFEST_NAME, check_file_name

MAX_BUNDLE_BYTES = 8 << 30


def pack_bundle(bundle_dir: Path, tar_path: Path) -> Bundle:
    """Write ``bundle_dir`` as a reproducible, uncompressed tarball at ``tar_path``."""
    bundle = open_bundle(bundle_dir)
    names = sorted([*bundle.manifest.files, MANIFEST_NAME])
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    partial = tar_path.with_name(f".{tar_path.name}.partial")
    try:
        with partial.open("wb") as tmp, \
                tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                _add_file(tar, bundle_dir / name, name)
        partial.replace(tar_path)
    finally:
        partial.unlink(missing_ok=True)
    return bundle


def pack_bundle_bytes(bundle_dir: Path) -> tuple[Bundle, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.tar"
        bundle = pack_bundle(bundle_dir, path)
        return bundle, path.read_bytes()


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with path.open("rb") as handle:
        tar.addfile(info, handle)


def unpack_bundle(tar_path: Path, dest: Path) -> Bundle:
    with tar_path.open("rb") as handle:
        return _unpack(handle, dest)


def unpack_bundle_bytes(data: bytes, dest: Path) -> Bundle:
    return _unpack(io.BytesIO(data), dest)


def _unpack(fileobj: io.BufferedIOBase | io.BytesIO | object, dest: Path) -> Bundle:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(dest)
    try:
        try:
            with tarfile.open(fileobj=fileobj, mode="r:*") as tar:  # type: ignore[call-overload]
                _extract_members(tar, staging)
        except tarfile.TarError as exc:
            raise BundleFormatError(f"not a bundle tarball: {exc}") from exc
        open_bundle(staging)
        _replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_bundle(dest)


def _extract_members(tar: tarfile.TarFile, staging: Path) -> None:
    total = 0
    for member in tar:
        name = check_file_name(member.name)
        if not member.isreg():
            raise UnexpectedFileError(name, "bundle tarballs hold regular files only")
        if (staging / name).exists():
            raise UnexpectedFileError(name, "appears twice in the tarball")
        total += member.size
        if total > MAX_BUNDLE_BYTES:
            raise BundleFormatError(f"bundle tarball exceeds {MAX_BUNDLE_BYTES} bytes")
        source = tar.extractfile(member)
        if source is None:
            raise UnexpectedFileError(name, "unreadable member")
        with source, (staging / name).open("wb") as out:
            shutil.copyfileobj(source, out)
