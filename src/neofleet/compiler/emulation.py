"""Verify aarch64 bundles by really running them under qemu-user.

``emulated_probe`` runs ``python -m neofleet.runtime.probe`` on the emulated aarch64
CPython that ``scripts/setup-aarch64-python.sh`` builds (``neofleet.emulation`` says where
it lives and how a guest starts: ``qemu-aarch64-static -L <sysroot>
<sysroot>/usr/bin/python3.11``, binfmt is never needed).

The guest gets a clean environment: one TVM thread, user site off, no host variables.

    CompileError
    └── EmulationError              qemu or the aarch64 environment is missing
        ├── EmulationTimeoutError   the probe ran past its time limit and was killed
        └── EmulatedProbeError      the probe failed; ``reason`` is the probe's own
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neofleet.compiler.errors import CompileError
from neofleet.emulation import (
    SETUP_HINT,
    Emulator,
    EmulatorUnavailable,
    copy_package,
    guest_argv,
    guest_python_env,
    locate_emulator,
    staged_package,
)

_TAIL = 2000


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


def find_emulator(modules: Iterable[str] = ()) -> Emulator:
    """Return the emulator, or raise ``EmulationError`` saying what is missing.

    ``modules``: top-level modules the emulated site-packages must also hold.
    """
    try:
        return locate_emulator(modules)
    except EmulatorUnavailable as exc:
        raise EmulationError(str(exc)) from exc


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
        command = [*guest_argv(emulator), "-m", "neofleet.runtime.probe", *probe_args]
        proc = _run(command, _guest_env(emulator, package_root), package_root, timeout_s)
    if proc.returncode != 0:
        raise _failure(proc)
    return _report(proc)


def _guest_env(emulator: Emulator, package_root: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(package_root),
        **guest_python_env(emulator, package_root),
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
    """``staged_package(home)``; when ``home`` is not writable, a temporary copy that lives
    for this call."""
    try:
        return staged_package(home)
    except OSError:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="neofleet-qemu-")))
        copy_package(root)
        return root
