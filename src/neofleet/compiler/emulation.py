"""Verify aarch64 bundles by really running them under qemu-user.

``emulated_probe`` runs ``python -m neofleet.runtime.probe`` on an emulated aarch64
CPython: ``qemu-aarch64-static -L <sysroot> <sysroot>/usr/bin/python3.11``, with the
environment that ``scripts/setup-aarch64-python.sh`` builds (binfmt is never needed)::

    $NEOFLEET_AARCH64_PYTHON (default ~/.cache/neofleet/aarch64-python)
    ├─ sysroot/                Debian bookworm arm64 libc, libstdc++ and CPython 3.11
    ├─ site-packages/          aarch64 wheels: numpy, pydantic, apache-tvm-ffi, onnxruntime
    ├─ lib/libtvm_runtime.so   from the aarch64 apache-tvm wheel
    ├─ stamp                   written last by the setup script
    └─ neofleet-src/<digest>/  copies of this host's pure-Python neofleet (made here)

The guest gets a clean environment: one TVM thread, user site off, no host variables.

    CompileError
    └── EmulationError              qemu or the aarch64 environment is missing
        ├── EmulationTimeoutError   the probe ran past its time limit and was killed
        └── EmulatedProbeError      the probe failed; ``reason`` is the probe's own
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neofleet
from neofleet.compiler.errors import CompileError

QEMU = "qemu-aarch64-static"
GUEST_PYTHON = "usr/bin/python3.11"
SETUP_HINT = "run scripts/setup-aarch64-python.sh"
_COPIES = "neofleet-src"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
_TAIL = 2000
_STALE_S = 86400.0


class EmulationError(CompileError):
    reason = "EmulatorUnavailable"


class EmulationTimeoutError(EmulationError):
    reason = "EmulationTimeout"


class EmulatedProbeError(EmulationError):
    """The emulated probe exited non-zero.

    ``reason`` is the probe's own (``BundleIntegrity``, ``InvalidInput``, ...) when it
    reported one, else ``EmulatedRunFailed``; ``returncode`` and ``stderr_tail`` are kept.
    """

    reason = "EmulatedRunFailed"

    def __init__(self, message: str, *, returncode: int, probe_reason: str | None,
                 stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        if probe_reason:
            self.reason = probe_reason


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


def find_emulator() -> Emulator:
    """Return the emulator, or raise ``EmulationError`` saying what is missing."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EmulationError(f"{QEMU} not found on PATH: {SETUP_HINT} (installs qemu-user-static)")
    emulator = Emulator(qemu=Path(qemu), home=aarch64_python_home())
    needed = [emulator.home / "stamp", emulator.python, emulator.site_packages,
              emulator.tvm_runtime]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise EmulationError(f"aarch64 Python environment incomplete at {emulator.home} "
                             f"(missing {', '.join(missing)}): {SETUP_HINT}")
    return emulator


def emulated_probe(
    bundle_dir: Path,
    inputs_npz: Path,
    outputs_npz: Path,
    *,
    timeout_s: float = 600,
    warmup: int = 0,
    repeat: int = 0,
    budget_s: float = 0.0,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run the bundle on ``inputs_npz`` under qemu, write ``outputs_npz``, return the report.

    The report is the probe's JSON line (``load_seconds``; ``median_ms``/``p90_ms``/``runs``
    when ``repeat`` > 0; ``budget_s`` is passed on as the probe's ``--budget-s``). The guest
    runs one thread; emulated timings say nothing about real aarch64 hardware.
    """
    emulator = find_emulator()
    probe_args = [str(Path(bundle_dir).resolve()), "--inputs", str(Path(inputs_npz).resolve()),
                  "--outputs", str(Path(outputs_npz).resolve()), "--warmup", str(warmup),
                  "--repeat", str(repeat), "--threads", "1"]
    if budget_s > 0:
        probe_args += ["--budget-s", str(budget_s)]
    probe_args += extra_args or []
    with contextlib.ExitStack() as stack:
        package_root = _staged_package(stack, emulator.home)
        command = [str(emulator.qemu), "-L", str(emulator.sysroot), str(emulator.python),
                   "-m", "neofleet.runtime.probe", *probe_args]
        proc = _run(command, _guest_env(emulator, package_root), package_root, timeout_s)
    if proc.returncode != 0:
        raise _failure(proc)
    return _report(proc)


def _guest_env(emulator: Emulator, package_root: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(package_root),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{package_root}{os.pathsep}{emulator.site_packages}",
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        "NEOFLEET_TVM_RUNTIME_LIB": str(emulator.tvm_runtime),
        "TVM_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def _run(command: list[str], env: dict[str, str], cwd: Path,
         timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run the guest; ``subprocess.run`` kills and reaps it when the time is up."""
    try:
        return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EmulationTimeoutError(
            f"emulated probe ran past {timeout_s:g} s and was killed"
            f"{_tail_note(_text(exc.stderr))}") from exc
    except OSError as exc:
        raise EmulationError(f"cannot start {command[0]}: {exc}: {SETUP_HINT}") from exc


def _report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report = _last_json_object(proc.stdout)
    if report is None:
        raise EmulatedProbeError(
            f"emulated probe printed no JSON report{_tail_note(proc.stderr)}",
            returncode=proc.returncode, probe_reason=None, stderr_tail=proc.stderr[-_TAIL:])
    return report


def _failure(proc: subprocess.CompletedProcess[str]) -> EmulatedProbeError:
    report = _last_json_object(proc.stdout) or {}
    error, probe_reason = report.get("error"), report.get("reason")
    if error is not None:
        message = f"emulated probe failed ({probe_reason}): {error}"
    else:
        message = f"emulated probe exited with {_exit_text(proc.returncode)}" \
                  f"{_tail_note(proc.stderr)}"
    return EmulatedProbeError(message, returncode=proc.returncode,
                              probe_reason=str(probe_reason) if probe_reason else None,
                              stderr_tail=proc.stderr[-_TAIL:])


def _last_json_object(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _exit_text(returncode: int) -> str:
    return f"signal {-returncode}" if returncode < 0 else f"status {returncode}"


def _tail_note(stderr: str) -> str:
    tail = stderr.strip()[-_TAIL:]
    return f"; stderr tail:\n{tail}" if tail else ""


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _staged_package(stack: contextlib.ExitStack, home: Path) -> Path:
    """A directory holding a copy of this host's ``neofleet`` package, for PYTHONPATH.

    Copies are cached under ``home`` by a digest of the sources (so the guest's .pyc files
    are reused); when ``home`` is not writable, a temporary copy lives for this call.
    """
    source = Path(neofleet.__file__).resolve().parent
    try:
        return _cached_copy(source, home / _COPIES)
    except OSError:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="neofleet-qemu-")))
        shutil.copytree(source, root / "neofleet", ignore=_IGNORE)
        return root


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
    """Drop copies of older sources unused for a day (a running probe may hold a newer one)."""
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
