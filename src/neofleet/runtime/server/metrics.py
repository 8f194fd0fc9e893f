"""The server's Prometheus metrics, in a registry each ``ServerMetrics`` owns.

Names and labels are a stable API (the table is in ``neofleet.runtime.server``'s
docstring). Label values are fixed for the life of the process (model, revision, pool,
target come from flags or environment) or drawn from small fixed sets (``STATUSES``,
the error reasons of ``status.REASONS``), so the series count is bounded. Every labelled
child is created up front: series exist at zero from the first scrape, and observing is a
dictionary lookup plus the client's own lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from neofleet.runtime.server.status import REASONS, STATUSES

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ("model", "revision", "pool", "target")


@dataclass(frozen=True)
class Labels:
    """Who is serving: the label values every metric carries."""

    model: str
    revision: str
    pool: str
    target: str


def batch_buckets(max_batch: int) -> tuple[float, ...]:
    """1, 2, 4, … up to ``max_batch`` (always included)."""
    buckets = {float(max_batch)}
    size = 1
    while size < max_batch:
        buckets.add(float(size))
        size *= 2
    return tuple(sorted(buckets))


class ServerMetrics:
    """All metrics of one server, registered in ``self.registry`` (never the global one)."""

    def __init__(self, labels: Labels, *, backend: str, bundle_digest: str,
                 max_batch: int | None) -> None:
        self.registry = CollectorRegistry()
        values = astuple(labels)
        reg = self.registry
        duration = Histogram("neofleet_inference_request_duration_seconds",
                             "Time from request to response of /infer, by outcome",
                             [*LABELS, "status"], buckets=LATENCY_BUCKETS, registry=reg)
        requests = Counter("neofleet_inference_requests",
                           "Inference requests answered, by outcome", [*LABELS, "status"],
                           registry=reg)
        errors = Counter("neofleet_inference_errors", "Inference requests that failed, by reason",
                         [*LABELS, "reason"], registry=reg)
        self._duration = {s: duration.labels(*values, s) for s in STATUSES}
        self._requests = {s: requests.labels(*values, s) for s in STATUSES}
        self._errors = {r: errors.labels(*values, r) for r in REASONS}
        self._queue = Histogram("neofleet_inference_queue_duration_seconds",
                                "Time a request waited for a worker thread (or its batch)",
                                LABELS, buckets=LATENCY_BUCKETS, registry=reg).labels(*values)
        self._inflight = Gauge("neofleet_inflight_requests",
                               "Inference requests admitted and not yet answered",
                               LABELS, registry=reg).labels(*values)
        self._load = Gauge("neofleet_model_load_duration_seconds",
                           "Seconds it took to verify and load the bundle", LABELS,
                           registry=reg).labels(*values)
        Gauge("neofleet_model_info", "The model this server runs (always 1)",
              [*LABELS, "backend", "bundle_digest"], registry=reg,
              ).labels(*values, backend, bundle_digest).set(1)
        self._batch = None if max_batch is None else Histogram(
            "neofleet_inference_batch_size", "Requests' rows run together in one batch",
            LABELS, buckets=batch_buckets(max_batch), registry=reg).labels(*values)

    def answered(self, status: str, seconds: float, reason: str | None = None) -> None:
        """One /infer request answered with ``status``; failures also count their reason."""
        self._duration[status].observe(seconds)
        self._requests[status].inc()
        if reason is not None:
            self._errors[reason].inc()

    def queued(self, seconds: Sequence[float]) -> None:
        for s in seconds:
            self._queue.observe(s)

    def batched(self, rows: int) -> None:
        if self._batch is not None:
            self._batch.observe(rows)

    def inflight(self, count: int) -> None:
        self._inflight.set(count)

    def loaded(self, seconds: float) -> None:
        self._load.set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
