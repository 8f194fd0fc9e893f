"""The control-plane binaries: built once from Debian's source package, then cached.

The build itself is ``build_control_plane.sh`` (package data), which owns the apt steps,
the two fixes from the notes and the cache key; this module runs it and finds etcd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from neofleet.sandbox.errors import BuildError

SCRIPT = Path(__file__).with_name("build_control_plane.sh")
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def default_cache() -> Path:
    base = os.environ.get("NEOFLEET_CACHE") or Path.home() / ".cache" / "neofleet"
    return Path(base) / "control-plane"


def control_plane_binaries(cache_root: Path | None = None) -> Path:
    """The folder holding the three binaries; builds them (~5 min) when not cached."""
    root = (cache_root or default_cache()).resolve()  # the build script changes folder
    result = subprocess.run(["bash", str(SCRIPT), str(root)], stdout=subprocess.PIPE,
                            text=True, check=False)
    folder = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or folder is None:
        raise BuildError(f"building the control plane failed (exit {result.returncode}); "
                         "its output is above")
    missing = [name for name in BINARIES if not (folder / name).is_file()]
    if missing:
        raise BuildError(f"the control-plane cache {folder} lacks {missing}")
    return folder


def etcd_binary() -> Path:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        raise BuildError("etcd is not installed (Debian package etcd-server)")
    return Path(found)
