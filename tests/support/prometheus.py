"""A real Prometheus for tests: Debian's ``prometheus`` scraping static targets.

    with PrometheusServer(["127.0.0.1:8080"]) as prom:
        prom.wait_for(lambda: prom.query("up") or None, timeout=60)

It listens on a free 127.0.0.1 port, keeps its TSDB in a temp dir, scrapes every second
(its first scrape comes a few seconds after start) and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.support.registry import free_port

BINARY = "/usr/bin/prometheus"
T = TypeVar("T")

_CONFIG = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: {job}
    metrics_path: /metrics
    static_configs:
      - targets: [{targets}]
"""


def prometheus_binary() -> str | None:
    if os.access(BINARY, os.X_OK):
        return BINARY
    return shutil.which("prometheus")


class PrometheusServer:
    """``prometheus`` on a free 127.0.0.1 port scraping ``targets`` (host:port)."""

    def __init__(self, targets: list[str], *, job: str = "neofleet", interval: str = "1s",
                 start_timeout: float = 30.0, attempts: int = 3) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        self._dir = Path(tempfile.mkdtemp(prefix="neofleet-prometheus-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        config = self._dir / "prometheus.yml"
        config.write_text(_CONFIG.format(interval=interval, job=job,
                                         targets=", ".join(f'"{t}"' for t in targets)))
        try:
            for _ in range(attempts):  # another process may take the port in between
                if self._start(binary, config, start_timeout):
                    return
            raise RuntimeError(f"prometheus did not start: {self.log_text()[-2000:]}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (empty when there is no data yet)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            doc = json.loads(response.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {doc}")
        result = doc["data"]["result"]
        assert isinstance(result, list)
        return result

    def wait_for(self, probe: Callable[[], T | None], timeout: float, step: float = 0.5) -> T:
        """Call ``probe`` until it returns something other than None (or time runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing after {timeout} s; prometheus log:\n"
                                   f"{self.log_text()[-2000:]}")
            time.sleep(step)

    def _start(self, binary: str, config: Path, timeout: float) -> bool:
        self.port = free_port()
        data = self._dir / f"data-{self.port}"
        with (self._dir / "prometheus.log").open("ab") as log:
            self._process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
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
        """Terminate prometheus by PID (kill if it lingers) and delete its data."""
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
