"""The operator's own Prometheus metrics, in a registry it owns (never the global one)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "neofleet_operator_reconciles", "Reconciles by kind and outcome",
            ["kind", "outcome"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "neofleet_operator_reconcile_duration_seconds", "Time per reconcile", ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.compile_seconds = Histogram(
            "neofleet_compile_duration_seconds", "Compile Job durations by target and outcome",
            ["target", "outcome"], buckets=(10, 30, 60, 120, 300, 600, 1200, 3600, 7200),
            registry=self.registry)

    def observe_reconcile(self, kind: str, outcome: str, seconds: float) -> None:
        self.reconciles.labels(kind, outcome).inc()
        self.reconcile_seconds.labels(kind).observe(seconds)

    def observe_compile(self, target: str, outcome: str, start: str | None,
                        end: str | None) -> None:
        if start and end:
            elapsed = (_parse(end) - _parse(start)).total_seconds()
            self.compile_seconds.labels(target, outcome).observe(max(0.0, elapsed))


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
