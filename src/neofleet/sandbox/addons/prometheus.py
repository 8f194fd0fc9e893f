"""A real Prometheus for the sandbox and the tests: Debian's ``prometheus`` scraping
static targets and/or targets listed in ``file_sd`` files (``discovery.py`` writes one
from the sandbox's pods).

    with PrometheusServer(["127.0.0.1:8080"]) as prom:
        prom.wait_for(lambda: prom.query("up") or None, timeout=60)
    with PrometheusServer([], file_sd=[Path("pods.json")]) as prom: ...

It listens on a free 127.0.0.1 port, keeps its TSDB in a temp dir, scrapes every second
(its first scrape comes a few seconds after start), re-reads the file_sd files on change
(and at least every second) and is stopped by PID.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from neofleet.sandbox.addons.localserver import LocalServer, find_binary

BINARY = "/usr/bin/prometheus"
T = TypeVar("T")


def _config(targets: list[str], job: str, interval: str, file_sd: Sequence[Path],
            honored_file_sd: Sequence[Path] = ()) -> str:
    scrape: dict[str, Any] = {"job_name": job, "metrics_path": "/metrics"}
    if targets or not file_sd:
        scrape["static_configs"] = [{"targets": list(targets)}]
    if file_sd:
        scrape["file_sd_configs"] = [_file_sd(file_sd)]
    scrapes = [scrape]
    if honored_file_sd:     # a series' own labels win over its target's, as honorLabels
        scrapes.append({"job_name": f"{job}-honor-labels", "metrics_path": "/metrics",
                        "honor_labels": True, "file_sd_configs": [_file_sd(honored_file_sd)]})
    doc = {"global": {"scrape_interval": interval, "scrape_timeout": interval,
                      "evaluation_interval": interval},
           "scrape_configs": scrapes}
    return json.dumps(doc, indent=2)  # JSON is YAML


def _file_sd(paths: Sequence[Path]) -> dict[str, Any]:
    # absolute: Prometheus resolves a relative path against its config file's folder
    return {"files": [str(Path(path).resolve()) for path in paths], "refresh_interval": "1s"}


def prometheus_binary() -> str | None:
    return find_binary(BINARY, "prometheus")


class PrometheusServer(LocalServer):
    """``prometheus`` on a free 127.0.0.1 port scraping ``targets`` (host:port) and the
    targets of the ``file_sd`` files (JSON or YAML; the name must end in .json/.yml/.yaml),
    and those of ``honored_file_sd`` with ``honor_labels`` (as a PodMonitor or
    ServiceMonitor with ``honorLabels: true``)."""

    NAME = "prometheus"
    READY_PATH = "/-/ready"
    POLL_SECONDS = 0.1

    def __init__(self, targets: list[str], *, job: str = "neofleet", interval: str = "1s",
                 start_timeout: float = 30.0, attempts: int = 3,
                 file_sd: Sequence[Path] = (), honored_file_sd: Sequence[Path] = ()) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        super().__init__()
        self._binary = binary
        self._config = self._dir / "prometheus.yml"
        self._config.write_text(_config(targets, job, interval, file_sd, honored_file_sd))
        self._start_with_retries(start_timeout, attempts)

    def _argv(self) -> list[str]:
        data = self._dir / f"data-{self.port}"
        return [self._binary, f"--config.file={self._config}", f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (empty when there is no data yet)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http)
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
