"""The operator's own Prometheus metrics, in a registry it owns (never the global one)."""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from neofleet.api.edgemodeldeployment import PHASES


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
        self.leader = Gauge(
            "neofleet_operator_leader",
            "1 while this operator holds the leader lease (or runs without election)",
            registry=self.registry)

        deployment = ["namespace", "name"]
        self.deployment_phase = Gauge(
            "neofleet_edgemodeldeployment_phase",
            "1 for an EdgeModelDeployment's current phase, 0 for the others",
            [*deployment, "phase"], registry=self.registry)
        self.rollout_step_started = Gauge(
            "neofleet_rollout_step_started_timestamp_seconds",
            "When the running canary's current step started (absent when none runs)",
            deployment, registry=self.registry)
        self.rollout_paused = Gauge(
            "neofleet_rollout_paused",
            "1 while a rollout waits for a promotion or spec.paused", deployment,
            registry=self.registry)
        self.rollbacks = Counter(
            "neofleet_rollbacks", "Rollouts rolled back", deployment, registry=self.registry)
        self.pool_pods = Gauge(
            "neofleet_edgemodeldeployment_pool_pods",
            "Runtime pods of a pool: state=desired, and state=ready (stable and canary)",
            [*deployment, "pool", "state"], registry=self.registry)
        self._pools: dict[tuple[str, str], set[str]] = {}

    def observe_deployment(self, namespace: str, name: str, status: dict[str, object],
                           rolled_back: bool) -> None:
        """Export an EdgeModelDeployment's status (after each status write)."""
        phase = status.get("phase")
        for each in PHASES:
            self.deployment_phase.labels(namespace, name, each).set(1 if each == phase else 0)
        self.rollout_paused.labels(namespace, name).set(1 if phase == "Paused" else 0)
        rollout = status.get("rollout")
        started = rollout.get("stepStartTime") if isinstance(rollout, dict) else None
        if status.get("canaryRevision") and isinstance(started, str):
            self.rollout_step_started.labels(namespace, name).set(_parse(started).timestamp())
        else:
            self._remove(self.rollout_step_started, namespace, name)
        if rolled_back:
            self.rollbacks.labels(namespace, name).inc()
        self._observe_pools(namespace, name, status.get("pools"))

    def _observe_pools(self, namespace: str, name: str, pools: object) -> None:
        rows = [p for p in pools if isinstance(p, dict)] if isinstance(pools, list) else []
        seen = set()
        for row in rows:
            pool = str(row.get("name"))
            seen.add(pool)
            ready = int(row.get("stableReady") or 0) + int(row.get("canaryReady") or 0)
            self.pool_pods.labels(namespace, name, pool, "desired").set(
                int(row.get("desired") or 0))
            self.pool_pods.labels(namespace, name, pool, "ready").set(ready)
        for gone in self._pools.get((namespace, name), set()) - seen:
            for state in ("desired", "ready"):
                self._remove(self.pool_pods, namespace, name, gone, state)
        self._pools[(namespace, name)] = seen

    def forget_deployment(self, namespace: str, name: str) -> None:
        for each in PHASES:
            self._remove(self.deployment_phase, namespace, name, each)
        for gauge in (self.rollout_step_started, self.rollout_paused):
            self._remove(gauge, namespace, name)
        self._observe_pools(namespace, name, [])
        self._pools.pop((namespace, name), None)

    @staticmethod
    def _remove(metric: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):     # never set
            metric.remove(*labels)

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
