"""Where the served bundle comes from: a directory, or ``oci://HOST/REPO@sha256:…``.

An OCI reference must name a digest. It is pulled with ``neofleet.bundle.oci.pull_bundle``
(every digest verified before the bundle is moved into place) into
``CACHE/sha256-<hex>``, where CACHE is ``--cache-dir``, else ``$NEOFLEET_CACHE/bundles``,
else ``~/.cache/neofleet/bundles``. Next to it, ``sha256-<hex>.bundle-digest`` records the
digest of the bundle that pull verified; a later start reuses the cached bundle only if
it verifies again (``open_bundle``) and has that digest, and pulls afresh otherwise.

The cache may be shared by several servers (a PersistentVolumeClaim every revision's pods
of a pool mount, so a rollback finds the stable bundle without downloading it): an
exclusive ``flock`` on ``sha256-<hex>.lock`` makes the check-then-pull of one digest
happen once at a time, so no server replaces a bundle another is loading.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from neofleet.bundle import Bundle, open_bundle
from neofleet.bundle.errors import ReferenceError_
from neofleet.bundle.oci import parse_reference, pull_bundle
from neofleet.errors import NeofleetError

OCI_PREFIX = "oci://"
RECORD_SUFFIX = ".bundle-digest"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    root = env.get("NEOFLEET_CACHE")
    if root:
        return Path(root) / "bundles"
    return Path.home() / ".cache" / "neofleet" / "bundles"


def cache_path(ref: str, cache_dir: Path) -> Path:
    """Where the bundle ``ref`` (which must name a digest) is kept."""
    parsed = parse_reference(ref)
    if parsed.digest is None:
        raise ReferenceError_(f"{ref}: serve needs a digest (oci://HOST/REPO@sha256:…); "
                              "`neofleet push` prints it")
    return cache_dir / parsed.digest.replace(":", "-")


@dataclass(frozen=True)
class Opened:
    bundle: Bundle
    origin: Literal["directory", "cache", "registry"]


def open_source(source: str, cache_dir: Path) -> Opened:
    """The verified bundle ``source`` names, pulled into the cache when it is a reference."""
    if not source.startswith(OCI_PREFIX):
        return Opened(open_bundle(Path(source)), "directory")
    dest = cache_path(source, cache_dir)
    record = dest.with_name(dest.name + RECORD_SUFFIX)
    with _locked(dest.with_name(dest.name + ".lock")):
        cached = _cached(dest, record)
        if cached is not None:
            return Opened(cached, "cache")
        bundle = pull_bundle(source, dest)
        _write_atomically(record, bundle.digest + "\n")
    return Opened(bundle, "registry")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached(dest: Path, record: Path) -> Bundle | None:
    if not dest.is_dir() or not record.is_file():
        return None
    try:
        bundle = open_bundle(dest)
    except NeofleetError:
        return None
    return bundle if bundle.digest == record.read_text().strip() else None


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
