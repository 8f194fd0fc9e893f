"""``LocalServer``: a real server binary run by a test on a free 127.0.0.1 port.

Subclasses say how to start it (``_argv``) and where it answers when ready
(``READY_PATH``); this class owns the rest: a private temp dir, retries when another
process takes the port first, a readiness poll, the log, and stopping by PID (SIGTERM,
then SIGKILL) even when a test fails.
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(path: str, name: str) -> str | None:
    """``path`` if executable, else ``name`` on PATH, else None."""
    return path if os.access(path, os.X_OK) else shutil.which(name)


class LocalServer(abc.ABC):
    NAME: ClassVar[str] = "server"
    READY_PATH: ClassVar[str] = "/"
    POLL_SECONDS: ClassVar[float] = 0.05

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=f"neofleet-{self.NAME}-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _start_with_retries(self, start_timeout: float, attempts: int) -> None:
        try:
            for _ in range(attempts):  # another process may take the port in between
                self.port = free_port()
                if self._start(start_timeout):
                    return
            raise RuntimeError(f"{self.NAME} did not start: {self.log_text()[-2000:]}")
        except BaseException:
            self.stop()
            raise

    @abc.abstractmethod
    def _argv(self) -> list[str]:
        """The command that starts the server on ``self.port``."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _log(self) -> Path:
        return self._dir / f"{self.NAME}.log"

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def _start(self, timeout: float) -> bool:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        if self._wait_ready(timeout):
            return True
        self._kill()
        return False

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + self.READY_PATH,  # noqa: S310
                                            timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(self.POLL_SECONDS)
        return False

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def stop(self) -> None:
        """Terminate by PID (kill if it lingers) and delete the temp dir."""
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
