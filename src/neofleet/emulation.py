"""The emulated aarch64 CPython: where it lives and how to start a guest on it.

``scripts/setup-aarch64-python.sh`` builds it; it runs as ``qemu-aarch64-static -L
<sysroot> <sysroot>/usr/bin/python3.11`` (binfmt is never needed)::

    $NEOFLEET_AARCH64_PYTHON (default ~/.cache/neofleet/aarch64-python)
    ├─ sysroot/                Debian bookworm arm64 libc, libstdc++ and CPython 3.11
    ├─ site-packages/          aarch64 wheels: numpy, pydantic, apache-tvm-ffi, onnxruntime
    │                          and what `neofleet serve` imports (SERVE_MODULES)
    ├─ lib/libtvm_runtime.so   from the aarch64 apache-tvm wheel
    ├─ stamp                   written last by the setup script
    └─ neofleet-src/<digest>/  copies of this host's pure-Python neofleet (made here)

Shared by the compiler, which verifies aarch64 bundles on it
(``neofleet.compiler.emulation``), and the sandbox's node agent, which runs the neofleet
pods of simulated arm64 nodes on it. Standard library only.

    NeofleetError
    └── EmulatorUnavailable     qemu or the aarch64 environment (or a module asked for)
                                is missing; the message says to run the setup script
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import neofleet
from neofleet.errors import NeofleetError

QEMU = "qemu-aarch64-static"
GUEST_PYTHON = "usr/bin/python3.11"
SETUP_HINT = "run scripts/setup-aarch64-python.sh"
# Top-level modules `neofleet serve` imports beyond the probe's (the setup script's
# SERVE_WHEELS); an environment built by an older setup script lacks them.
SERVE_MODULES = ("click", "starlette", "anyio", "uvicorn", "h11", "prometheus_client",
                 "orjson", "oras", "requests", "jsonschema")
_COPIES = "neofleet-src"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
_STALE_S = 86400.0


class EmulatorUnavailable(NeofleetError):
    reason = "EmulatorUnavailable"


@dataclass(frozen=True)
class Emulator:
    """A usable qemu binary and aarch64 environment."""

    qemu: Path
    home: Path

    @property
    def sysroot(self) -> Path:
        return self.home / "sysroot"

    @property
    def python(self) -> Path:
        return self.sysroot / GUEST_PYTHON

    @property
    def site_packages(self) -> Path:
        return self.home / "site-packages"

    @property
    def tvm_runtime(self) -> Path:
        return self.home / "lib" / "libtvm_runtime.so"


def aarch64_python_home() -> Path:
    """Where the setup script builds the aarch64 environment."""
    explicit = os.environ.get("NEOFLEET_AARCH64_PYTHON")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "neofleet" / "aarch64-python"


def locate_emulator(modules: Iterable[str] = ()) -> Emulator:
    """Return the emulator, or raise ``EmulatorUnavailable`` saying what is missing.

    ``modules``: top-level modules the emulated site-packages must also hold.
    """
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EmulatorUnavailable(f"{QEMU} not found on PATH: {SETUP_HINT} "
                                  "(installs qemu-user-static)")
    emulator = Emulator(qemu=Path(qemu), home=aarch64_python_home())
    needed = [emulator.home / "stamp", emulator.python, emulator.site_packages,
              emulator.tvm_runtime]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise EmulatorUnavailable(f"aarch64 Python environment incomplete at {emulator.home} "
                                  f"(missing {', '.join(missing)}): {SETUP_HINT}")
    lacking = [name for name in modules
               if not (emulator.site_packages / name).is_dir()
               and not (emulator.site_packages / f"{name}.py").is_file()]
    if lacking:
        raise EmulatorUnavailable(f"aarch64 Python environment at {emulator.home} lacks "
                                  f"{', '.join(lacking)} (built by an older setup script): "
                                  f"{SETUP_HINT}")
    return emulator


def guest_argv(emulator: Emulator) -> list[str]:
    """The command that starts the emulated ``python3.11``; append its arguments."""
    return [str(emulator.qemu), "-L", str(emulator.sysroot), str(emulator.python)]


def guest_python_env(emulator: Emulator, package_root: Path) -> dict[str, str]:
    """The variables the emulated interpreter needs whatever else the guest's env holds:
    ``package_root`` (from ``staged_package``) and the aarch64 site-packages as its path,
    no user site, not the current directory on the path, the aarch64 TVM runtime."""
    return {
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{package_root}{os.pathsep}{emulator.site_packages}",
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        "NEOFLEET_TVM_RUNTIME_LIB": str(emulator.tvm_runtime),
    }


def staged_package(home: Path) -> Path:
    """A directory holding a copy of this host's ``neofleet`` package and nothing else (the
    host's site-packages would shadow the guest's aarch64 extensions with x86 ones), for
    PYTHONPATH.

    Copies are cached under ``home`` by a digest of the sources (so the guest's .pyc files
    are reused); raises OSError when ``home`` is not writable.
    """
    return _cached_copy(package_source(), home / _COPIES)


def package_source() -> Path:
    """This host's ``neofleet`` package directory."""
    return Path(neofleet.__file__).resolve().parent


def copy_package(dest: Path) -> None:
    """Copy this host's ``neofleet`` package (sources only) to ``dest/neofleet``."""
    shutil.copytree(package_source(), dest / "neofleet", ignore=_IGNORE)


def _cached_copy(source: Path, cache: Path) -> Path:
    final = cache / _source_digest(source)
    if (final / "neofleet").is_dir():
        os.utime(final)  # marks it used, for _prune
        return final
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
    try:
        shutil.copytree(source, staging / "neofleet", ignore=_IGNORE)
        staging.replace(final)
    except OSError:
        if not (final / "neofleet").is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(cache, keep=final)
    return final


def _prune(cache: Path, *, keep: Path) -> None:
    """Drop copies of older sources unused for a day (a running probe may hold a newer one;
    a sandbox pod serving for over a day from older sources can lose its copy)."""
    horizon = time.time() - _STALE_S
    for entry in cache.iterdir():
        with contextlib.suppress(OSError):  # another process may be pruning too
            if entry != keep and not entry.name.startswith(".") and \
                    entry.stat().st_mtime < horizon:
                shutil.rmtree(entry, ignore_errors=True)


def _source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
