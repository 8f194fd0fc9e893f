"""The server's /metrics scraped by a real Prometheus: a latency quantile query returns a
value and the info metric carries the configured labels."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import ServedModel
from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.integration

QUANTILE = ("histogram_quantile(0.99, sum by (le) "
            "(rate(neofleet_inference_request_duration_seconds_bucket[30s])))")
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _keep_sending(server: ServedModel, stop: threading.Event, sent: list[int]) -> None:
    """Requests at a steady pace, so every scrape sees new observations."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        while not stop.is_set():
            response = client.post("/v2/models/matmul/infer", json=BODY)
            sent.append(response.status_code)
            stop.wait(0.01)


def _numeric(result: list[dict[str, object]]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])  # type: ignore[index]
    return value if value == value else None  # NaN until two scrapes saw increases


def test_prometheus_scrapes_latency_quantile_and_model_info(
        serve: Callable[..., ServedModel], server_bundles: dict[str, Path]) -> None:
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    server = serve(server_bundles["matmul"], "--revision", "rev-2", "--pool", "edge-x86",
                   "--target", "native")
    stop, sent = threading.Event(), []
    sender = threading.Thread(target=_keep_sending, args=(server, stop, sent))
    sender.start()
    try:
        with PrometheusServer([f"127.0.0.1:{server.port}"]) as prom:
            p99 = prom.wait_for(lambda: _numeric(prom.query(QUANTILE)), timeout=60)
            info = prom.wait_for(lambda: prom.query("neofleet_model_info") or None, timeout=30)
    finally:
        stop.set()
        sender.join(timeout=30)
    assert 0 < p99 < 10
    labels = info[0]["metric"]
    assert {k: labels[k] for k in ("model", "revision", "pool", "target", "backend")} == {
        "model": "matmul", "revision": "rev-2", "pool": "edge-x86", "target": "native",
        "backend": "onnxruntime"}
    assert labels["bundle_digest"].startswith("sha256:") and info[0]["value"][1] == "1"
    assert sent and set(sent) == {200}
