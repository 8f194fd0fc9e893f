"""The bundle format: manifest, open/verify, atomic writes, pack/unpack."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from neofleet.bundle import (
    MANIFEST_NAME,
    META_NAME,
    BundleFormatError,
    DigestMismatchError,
    Manifest,
    MissingFileError,
    UnexpectedFileError,
    open_bundle,
    pack_bundle,
    unpack_bundle,
    write_bundle,
)
from neofleet.bundle.manifest import FileEntry, build_manifest
from neofleet.bundle.pack import unpack_bundle_bytes
from tests.support.bundles import make_bundle, make_meta


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", extra_files={"params.bin": b"\x00\x01" * 100}).path


def _rewrite_manifest(directory: Path) -> None:
    """Re-describe the directory as it is now (to test what comes after the digests)."""
    old = Manifest.from_bytes((directory / MANIFEST_NAME).read_bytes())
    new = build_manifest(directory, backend=old.backend, artifact=old.artifact)
    (directory / MANIFEST_NAME).write_bytes(new.to_bytes())


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------- manifest


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        backend="tvm",
        artifact="compiled.so",
        files={"compiled.so": FileEntry(3, "a" * 64), META_NAME: FileEntry(10, "b" * 64)},
    )
    raw = manifest.to_bytes()
    again = Manifest.from_bytes(raw)
    assert again == manifest
    assert again.to_bytes() == raw
    assert again.digest == manifest.digest
    assert manifest.digest.startswith("sha256:")


def test_digest_stable_across_two_writes(tmp_path: Path) -> None:
    first = make_bundle(tmp_path / "one")
    second = make_bundle(tmp_path / "two")
    assert first.digest == second.digest
    assert (first.path / MANIFEST_NAME).read_bytes() == (second.path / MANIFEST_NAME).read_bytes()
    third = make_bundle(tmp_path / "three", artifact_bytes=b"other")
    assert third.digest != first.digest


def test_open_bundle_verifies_and_parses(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    assert bundle.manifest.backend == "onnxruntime"
    assert bundle.artifact_path == bundle_dir / "compiled.onnx"
    assert bundle.meta.requirements.target_arch == "x86_64"


# ---------------------------------------------------------------------------- open_bundle


@pytest.mark.parametrize("same_size", [True, False])
def test_altered_file_is_named(bundle_dir: Path, same_size: bool) -> None:
    path = bundle_dir / "params.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + b"X" if same_size else data + b"X")
    with pytest.raises(DigestMismatchError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == "params.bin"
    assert ("sha256" if same_size else "size") in str(info.value)


def test_missing_file(bundle_dir: Path) -> None:
    (bundle_dir / "params.bin").unlink()
    with pytest.raises(MissingFileError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == "params.bin"


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_NAME).unlink()
    with pytest.raises(MissingFileError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == MANIFEST_NAME


def test_extra_file(bundle_dir: Path) -> None:
    (bundle_dir / "surprise.py").write_text("import os\n")
    with pytest.raises(UnexpectedFileError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == "surprise.py"


def test_extra_directory(bundle_dir: Path) -> None:
    (bundle_dir / "sub").mkdir()
    with pytest.raises(UnexpectedFileError):
        open_bundle(bundle_dir)


def test_symlink_with_the_right_content_is_rejected(bundle_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes((bundle_dir / "params.bin").read_bytes())
    (bundle_dir / "params.bin").unlink()
    (bundle_dir / "params.bin").symlink_to(outside)
    with pytest.raises(UnexpectedFileError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == "params.bin"


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "sub/file", ".hidden", "a b", ""])
def test_unsafe_name_in_manifest(bundle_dir: Path, name: str) -> None:
    doc = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    doc["files"][name] = {"size": 0, "sha256": "0" * 64}
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(BundleFormatError, match="unsafe"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": "neofleet.bundle/v1", "backend": "tvm", "artifact": "x", "files": {}}',
        b'{"format": "other/v9", "backend": "tvm", "artifact": "x", "files": {"x": {}}}',
    ],
)
def test_invalid_manifest(bundle_dir: Path, raw: bytes) -> None:
    (bundle_dir / MANIFEST_NAME).write_bytes(raw)
    with pytest.raises(BundleFormatError):
        open_bundle(bundle_dir)


@pytest.mark.parametrize("raw", [b"{not json", b"{}", b'{"Requirements": 3}'])
def test_invalid_meta(bundle_dir: Path, raw: bytes) -> None:
    (bundle_dir / META_NAME).write_bytes(raw)
    _rewrite_manifest(bundle_dir)  # the digests now match: only the meta itself is wrong
    with pytest.raises(BundleFormatError, match=META_NAME):
        open_bundle(bundle_dir)


def test_meta_not_listed_in_manifest(bundle_dir: Path) -> None:
    (bundle_dir / META_NAME).unlink()
    _rewrite_manifest(bundle_dir)
    with pytest.raises(MissingFileError) as info:
        open_bundle(bundle_dir)
    assert info.value.filename == META_NAME


# ---------------------------------------------------------------------------- write_bundle


def test_write_bundle_failing_midway_leaves_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    good.write_bytes(b"model")
    dest = tmp_path / "out" / "bundle"
    with pytest.raises(FileNotFoundError):
        write_bundle(
            dest,
            files={"compiled.onnx": good, "params.bin": tmp_path / "does-not-exist"},
            artifact="compiled.onnx",
            backend="onnxruntime",
            meta=make_meta(),
            graph={},
        )
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_write_bundle_failing_keeps_the_old_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    before = open_bundle(bundle_dir).digest
    with pytest.raises(FileNotFoundError):
        write_bundle(
            bundle_dir,
            files={"compiled.onnx": tmp_path / "nope"},
            artifact="compiled.onnx",
            backend="onnxruntime",
            meta=make_meta(),
            graph={},
        )
    assert open_bundle(bundle_dir).digest == before
    assert _leftovers(bundle_dir.parent) == []


def test_write_bundle_replaces_an_existing_bundle(bundle_dir: Path) -> None:
    new = make_bundle(bundle_dir, artifact_bytes=b"new model")
    assert open_bundle(bundle_dir).digest == new.digest
    assert not (bundle_dir / "params.bin").exists()
    assert _leftovers(bundle_dir.parent) == []


@pytest.mark.parametrize("name", [MANIFEST_NAME, META_NAME, "../x"])
def test_write_bundle_rejects_reserved_or_unsafe_names(tmp_path: Path, name: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises((ValueError, BundleFormatError)):
        write_bundle(
            tmp_path / "b",
            files={name: src},
            artifact=name,
            backend="tvm",
            meta=make_meta(),
            graph={},
        )
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- pack / unpack


def test_pack_unpack_round_trip_is_reproducible(bundle_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    packed = pack_bundle(bundle_dir, first)
    pack_bundle(bundle_dir, second)
    assert first.read_bytes() == second.read_bytes()

    unpacked = unpack_bundle(first, tmp_path / "unpacked")
    assert unpacked.digest == packed.digest == open_bundle(bundle_dir).digest
    for name in [*packed.manifest.files, MANIFEST_NAME]:
        assert (unpacked.path / name).read_bytes() == (bundle_dir / name).read_bytes()

    again = tmp_path / "3.tar"
    pack_bundle(unpacked.path, again)
    assert again.read_bytes() == first.read_bytes()


def test_pack_does_not_depend_on_mtimes_or_modes(bundle_dir: Path, tmp_path: Path) -> None:
    pack_bundle(bundle_dir, tmp_path / "1.tar")
    (bundle_dir / "params.bin").chmod(0o600)
    os.utime(bundle_dir / "params.bin", (1, 1))
    pack_bundle(bundle_dir, tmp_path / "2.tar")
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()


def test_pack_refuses_a_corrupt_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / "params.bin").write_bytes(b"changed")
    with pytest.raises(DigestMismatchError):
        pack_bundle(bundle_dir, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def _member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info, data


def _tarball(bundle_dir: Path, *extra: tuple[tarfile.TarInfo, bytes], skip: str = "") -> bytes:
    """The bundle's files as a tarball, plus ``extra`` members."""
    members = [
        _member(p.name, p.read_bytes()) for p in sorted(bundle_dir.iterdir()) if p.name != skip
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*members, *extra]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def test_unpack_of_a_hand_made_tarball(bundle_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "b"
    assert unpack_bundle_bytes(_tarball(bundle_dir), dest).digest == open_bundle(bundle_dir).digest


@pytest.mark.parametrize(
    ("extra", "skip", "error"),
    [
        (_member("../x", b"evil"), "", BundleFormatError),
        (_member("/tmp/neofleet-evil", b"evil"), "", BundleFormatError),
        (_member("./compiled.onnx", b"evil"), "", BundleFormatError),
        (_member("params.bin", kind=tarfile.SYMTYPE), "params.bin", UnexpectedFileError),
        (_member("params.bin", kind=tarfile.LNKTYPE), "params.bin", UnexpectedFileError),
        (_member("sub", kind=tarfile.DIRTYPE), "", UnexpectedFileError),
        (_member("params.bin", b"\x00\x01" * 100), "", UnexpectedFileError),  # duplicate
        (_member("params.bin", b"\x00\x02" * 100), "params.bin", DigestMismatchError),
        (_member("surprise.py", b"import os"), "", UnexpectedFileError),
    ],
    ids=[
        "dotdot",
        "absolute",
        "dot-slash",
        "symlink",
        "hardlink",
        "directory",
        "duplicate",
        "differs-from-manifest",
        "not-in-manifest",
    ],
)
def test_unpack_rejects_unsafe_tarballs(
    bundle_dir: Path,
    tmp_path: Path,
    extra: tuple[tarfile.TarInfo, bytes],
    skip: str,
    error: type[Exception],
) -> None:
    parent = tmp_path / "out"
    with pytest.raises(error):
        unpack_bundle_bytes(_tarball(bundle_dir, extra, skip=skip), parent / "b")
    assert list(parent.iterdir()) == []
    assert not (tmp_path / "x").exists()


def test_unpack_rejects_garbage_and_keeps_the_old_bundle(bundle_dir: Path) -> None:
    before = open_bundle(bundle_dir).digest
    with pytest.raises(BundleFormatError):
        unpack_bundle_bytes(b"this is not a tarball" * 100, bundle_dir)
    assert open_bundle(bundle_dir).digest == before
    assert _leftovers(bundle_dir.parent) == []
