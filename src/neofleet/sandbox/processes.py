"""Starting, checking and stopping the sandbox's processes (by PID, never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from neofleet.sandbox.errors import ClusterError


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start(argv: Sequence[str], log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so its whole group can be stopped)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)


def alive(pid: int, expected: str) -> bool:
    """The process exists and its command line contains ``expected`` (no recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return expected.encode() in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cwd_within(pid: int, folder: Path) -> bool:
    """The process runs in ``folder`` or below (how a pod process left behind is known)."""
    try:
        return Path(f"/proc/{pid}/cwd").readlink().is_relative_to(folder)
    except OSError:
        return False


def stop(pid: int, expected: str, timeout_s: float) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``timeout_s``."""
    if not alive(pid, expected):
        _reap(pid)
        return
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid, expected):
        _reap(pid)
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)
    _reap(pid)


def stop_child(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Stop a process this process started (its whole group), and reap it."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
    signal_group(process.pid, signal.SIGKILL)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group (falling back to the process itself); gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float, log: Path | None = None,
             process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``check`` until it holds; fail early when ``process`` exits. (Our own child is
    asked through its Popen: right after the fork its /proc command line may not show
    the new program yet.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ClusterError(f"{what}: the process exited with {process.returncode}"
                               f"{log_tail(log)}")
        time.sleep(0.1)
    raise ClusterError(f"{what}: not ready after {timeout_s:.0f} s{log_tail(log)}")


def log_tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-15:]
    return f"; last lines of {log}:\n" + "\n".join(lines)


def https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False
