"""Every PromQL expression of the generated dashboard and alert rules returns data from a
real Prometheus scraping real sources:

- two real `neofleet serve` processes (revisions r1 and r2 of model "cnn" in pool "edge",
  a canary beside its stable) under steady inference traffic, some of it bad requests;
- the operator's real ``OperatorMetrics`` registry on a prometheus_client HTTP server,
  recording reconciles (ok and error), compiles (Succeeded and Failed) and an
  EdgeModelDeployment's status (a canary step, a pool one pod short) as the test runs,
  scraped with ``honor_labels`` as the chart's ServiceMonitor does.

The scrape targets carry the labels a PodMonitor would give the runtime pods (namespace,
pod, container="runtime") through file_sd. Dashboard template variables are replaced by
values that match these series; alert expressions are queried without their threshold
(``Alert.measure``), and whole, to check they evaluate.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neofleet.observe.generate import DASHBOARD_FILE, DEFAULT_DIR
from neofleet.observe.rules import ALERTS
from tests.integration.conftest import ServedModel
from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = {"$namespace": "ml", "$model": "cnn", "$pool": "edge", "$__rate_interval": "1m"}
GOOD = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
BAD = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


def dashboard_queries() -> dict[str, tuple[str, str | None]]:
    """title/refId -> (PromQL with the variables filled in, the label it must carry)."""
    board = json.loads((ROOT / DEFAULT_DIR / DASHBOARD_FILE).read_text())
    found: dict[str, tuple[str, str | None]] = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = (target["expr"], None)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":   # label_values(EXPR, LABEL)
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"])
            assert match, variable["query"]
            found[f"variable {variable['name']}"] = (match.group(1), match.group(2))
    for key, (expr, label) in found.items():
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, key
        found[key] = (expr, label)
    return found


def _send(server: ServedModel, stop: threading.Event, sent: list[int]) -> None:
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        count = 0
        while not stop.is_set():
            count += 1
            body = BAD if count % 10 == 0 else GOOD
            sent.append(client.post("/v2/models/cnn/infer", json=body).status_code)
            stop.wait(0.02)


def _operator_activity(metrics: Any, stop: threading.Event) -> None:
    """Reconciles and compiles at a steady pace, so every scrape sees increases."""
    tick = 0
    while not stop.is_set():
        tick += 1
        metrics.observe_reconcile("CompilationJob", "ok", 0.02 + 0.01 * (tick % 5))
        metrics.observe_reconcile("EdgeModelDeployment", "ok", 0.05)
        metrics.observe_deployment("ml", "cnn", {
            "phase": "Progressing", "canaryRevision": "r2",
            "rollout": {"revision": "r2", "stepStartTime": "2026-12-01T10:00:00Z"},
            "pools": [{"name": "edge", "desired": 2, "stableReady": 1, "canaryReady": 0}]},
            rolled_back=tick == 1)
        if tick % 3 == 0:
            metrics.observe_reconcile("EdgeModelDeployment", "error", 0.3)
        minute = f"{tick % 60:02d}"
        metrics.observe_compile("cpu", "Succeeded", "2026-12-01T10:00:00Z",
                                f"2026-12-01T10:01:{minute}Z")
        if tick % 2 == 0:
            metrics.observe_compile("edge", "Failed", "2026-12-01T10:00:00Z",
                                    f"2026-12-01T10:00:{minute}Z")
        stop.wait(0.25)


@pytest.fixture
def operator_port() -> Iterator[int]:
    """The operator's metrics registry served on 127.0.0.1, busy as the test runs."""
    from prometheus_client import start_http_server

    from neofleet.operator.metrics import OperatorMetrics

    operator = OperatorMetrics()
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=operator.registry)
    stop = threading.Event()
    worker = threading.Thread(target=_operator_activity, args=(operator, stop))
    worker.start()
    try:
        yield httpd.server_port
    finally:
        stop.set()
        worker.join(timeout=10)
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _has_finite(result: list[dict[str, Any]], label: str | None) -> bool:
    for sample in result:
        if label is not None and not sample["metric"].get(label):
            continue
        if math.isfinite(float(sample["value"][1])):
            return True
    return False


def test_every_dashboard_and_alert_expression_returns_data(
        serve: Callable[..., ServedModel], server_bundles: dict[str, Path],
        operator_port: int, tmp_path: Path) -> None:
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    servers = {revision: serve(server_bundles["matmul"], "--name", "cnn", "--revision",
                               revision, "--pool", "edge", "--target", "native")
               for revision in ("r1", "r2")}
    groups = [{"targets": [f"127.0.0.1:{server.port}"],
               "labels": {"job": "ml/cnn", "namespace": "ml", "container": "runtime",
                          "pod": f"cnn-edge-{revision}-0"}}
              for revision, server in servers.items()]
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(groups))
    operator = tmp_path / "operator.json"
    operator.write_text(json.dumps([{"targets": [f"127.0.0.1:{operator_port}"],
                                     "labels": {"job": "neofleet",
                                                "namespace": "neofleet-system"}}]))

    queries = dashboard_queries()
    queries.update({f"alert {alert.name} (measure)": (alert.measure, None) for alert in ALERTS})
    stop, sent = threading.Event(), []
    senders = [threading.Thread(target=_send, args=(server, stop, sent))
               for server in servers.values()]
    for sender in senders:
        sender.start()
    missing: dict[str, tuple[str, str | None]] = dict(queries)
    try:
        with PrometheusServer([], file_sd=[targets], honored_file_sd=[operator]) as prom:
            prom.wait_for(lambda: len(prom.query("up == 1")) == 3 or None, timeout=60)
            deadline = time.monotonic() + 90
            while missing and time.monotonic() < deadline:
                for key, (expr, label) in list(missing.items()):
                    if _has_finite(prom.query(expr), label):
                        del missing[key]
                time.sleep(1)
            # the whole alert expressions evaluate (an error would raise), and with this
            # traffic the rollout (two revisions), compile and reconcile alerts' conditions
            # already hold (their `for:` has not passed)
            holding = {alert.name for alert in ALERTS if prom.query(alert.expr)}
            pool_pods = prom.query("neofleet_edgemodeldeployment_pool_pods")
            assert not prom.query("up == 0")
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert not missing, "no finite sample from:\n" + "\n".join(
        f"{key}: {expr}" for key, (expr, _) in missing.items())
    assert holding == {"NeofleetRolloutStuck", "NeofleetCompileFailed",
                       "NeofleetOperatorReconcileErrors", "NeofleetRuntimePodsNotReady"}
    # honour_labels kept the EdgeModelDeployment's namespace on the operator's series
    assert {s["metric"]["namespace"] for s in pool_pods} == {"ml"}
    assert set(sent) == {200, 400} and sent.count(200) > 100
    assert len(queries) >= 30
