"""One reconcile of an EdgeModelDeployment: read, resolve artifacts, measure when an
analysis is due, plan, apply, write status (no kopf here).

Level-triggered and idempotent like the CompilationJob reconcile: everything is
recomputed from the object, its status and what runs. A rollout in progress asks to be
looked at again (``requeue_s``) so pauses end and analyses run on time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from neofleet.api.edgemodeldeployment import EdgeModelDeploymentSpec, Measurement
from neofleet.operator.kube import Kube, namespace_terminating, utc_now
from neofleet.operator.metrics import OperatorMetrics
from neofleet.operator.planning import analysis as analyses
from neofleet.operator.planning.artifacts import (
    Candidate,
    Resolution,
    candidates_from_compilation,
    candidates_from_list,
    resolve,
)
from neofleet.operator.planning.compilation import Placement
from neofleet.operator.planning.rollout import (
    DeploymentPlan,
    DesiredWorkload,
    ObservedWorkload,
    World,
    analysis_due,
    plan_deployment,
)
from neofleet.operator.prometheus import query_scalar
from neofleet.operator.render.runtime import pod_monitor, scale_patch, service, workload

LOG = logging.getLogger("neofleet.operator")


@dataclass
class DeploymentReconciler:
    kube: Kube
    metrics: OperatorMetrics
    known: dict[str, Placement]
    prometheus_url: str | None = None
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _timers: dict[tuple[str, str], threading.Timer] = field(default_factory=dict)
    _monitors_checked: tuple[float, bool] | None = None

    def reconcile(self, namespace: str, name: str) -> None:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        started, outcome, requeue = time.perf_counter(), "error", None
        try:
            with lock:
                requeue = self._reconcile(namespace, name)
            outcome = "ok"
        except Exception as exc:
            if not namespace_terminating(exc):
                raise
            outcome = "ok"      # its namespace is going away, and the object with it
        finally:
            self.metrics.observe_reconcile("EdgeModelDeployment", outcome,
                                           time.perf_counter() - started)
        if requeue is not None:
            self._requeue(namespace, name, requeue)

    def reconcile_for_compilation(self, namespace: str, cj: str) -> None:
        """A CompilationJob changed: reconcile the EdgeModelDeployments that use it."""
        for emd in self.kube.list_edge_deployments([namespace]):
            ref = (emd.get("spec", {}).get("model") or {}).get("compilationJobRef") or {}
            if ref.get("name") == cj:
                self.reconcile(namespace, emd["metadata"]["name"])

    def resync(self, namespaces: list[str]) -> None:
        for emd in self.kube.list_edge_deployments(namespaces):
            self.reconcile(emd["metadata"]["namespace"], emd["metadata"]["name"])

    def _pod_monitors_exist(self) -> bool:
        """Checked at most once a minute (a CRD installed later is picked up)."""
        now = time.monotonic()
        if self._monitors_checked is None or now - self._monitors_checked[0] > 60:
            self._monitors_checked = (now, self.kube.has_pod_monitors())
        return self._monitors_checked[1]

    def stop(self) -> None:
        with self._guard:
            for timer in self._timers.values():
                timer.cancel()

    def _requeue(self, namespace: str, name: str, delay_s: float) -> None:
        """Look at the object again in ``delay_s``: the latest plan's wish replaces a pending
        one. (A reconcile run by the timer itself asks for the next one from inside that
        timer's thread, which is still alive then: it must not count as pending, or the
        chain stops after one link and a rollout waits for the next resync.)"""
        def fire() -> None:
            try:
                self.reconcile(namespace, name)
            except Exception:
                LOG.exception("requeued reconcile of %s/%s failed", namespace, name)
        with self._guard:
            old = self._timers.get((namespace, name))
            if old is not None and old is not threading.current_thread():
                old.cancel()
            timer = threading.Timer(delay_s, fire)
            timer.daemon = True
            self._timers[(namespace, name)] = timer
            timer.start()

    def _reconcile(self, namespace: str, name: str) -> float | None:
        emd = self.kube.get_edge_deployment(namespace, name)
        if emd is None or emd["metadata"].get("deletionTimestamp"):
            self.metrics.forget_deployment(namespace, name)
            return None
        try:
            spec = EdgeModelDeploymentSpec.model_validate(emd.get("spec", {}))
        except ValidationError as exc:
            self._invalid(emd, exc)
            return None
        world = self._world(emd, spec)
        plan = plan_deployment(name, int(emd["metadata"].get("generation", 1)), spec,
                               emd.get("status"), world)
        self._apply(emd, spec, plan, world)
        return plan.requeue_s

    def _world(self, emd: dict[str, Any], spec: EdgeModelDeploymentSpec) -> World:
        meta = emd["metadata"]
        nodes = self.kube.node_labels()
        resolutions = resolve(spec.pools, list(nodes.values()),
                              self._candidates(meta["namespace"], spec), self.known)
        pool_nodes = {p.name: sorted(n for n, labels in nodes.items()
                                     if all(labels.get(k) == v
                                            for k, v in p.node_selector.items()))
                      for p in spec.pools}
        now = utc_now()
        return World(resolutions=resolutions, pool_nodes=pool_nodes,
                     workloads=self.kube.observed_workloads(meta["namespace"], meta["name"]),
                     annotations=dict(meta.get("annotations") or {}), now=now,
                     measurements=self._measure(meta["name"], spec, emd.get("status"), now))

    def _candidates(self, namespace: str, spec: EdgeModelDeploymentSpec) -> list[Candidate]:
        if spec.model.compilation_job_ref is not None:
            cj = self.kube.get_compilation_job(namespace, spec.model.compilation_job_ref.name)
            return candidates_from_compilation(cj or {}, self.known)
        return candidates_from_list([a.wire() for a in spec.model.artifacts], self.known)

    def _measure(self, name: str, spec: EdgeModelDeploymentSpec,
                 status: dict[str, Any] | None, now: str) -> list[Measurement]:
        due = analysis_due(spec, status, now)
        if due is None:
            return []
        url = due.prometheus or self.prometheus_url
        status = status or {}
        queries = analyses.queries(due, name, status.get("canaryRevision", ""),
                                   status.get("stableRevision"))
        if url is None:
            return [Measurement(time=now, metric=q.metric, ok=False) for q in queries]
        return [analyses.evaluate(q, query_scalar(url, q.canary),
                                  query_scalar(url, q.stable) if q.stable else None, now)
                for q in queries]

    def _apply(self, emd: dict[str, Any], spec: EdgeModelDeploymentSpec,
               plan: DeploymentPlan, world: World) -> None:
        meta = emd["metadata"]
        namespace = meta["namespace"]
        observed = {w.name: w for w in world.workloads}
        for pool in spec.pools:
            if any(d.pool.name == pool.name for d in plan.apply):
                self.kube.ensure_service(service(emd, pool.name))
        if plan.apply and self._pod_monitors_exist():
            self.kube.ensure_pod_monitor(pod_monitor(emd))
        for desired in plan.apply:
            if desired.artifact is not None:
                manifest = workload(desired, emd, spec.runtime)
                done = self.kube.apply_workload(manifest, _hash(manifest))
                if done != "kept":
                    LOG.info("%s %s %s/%s", done, desired.kind, namespace, desired.name)
            elif _needs_scaling(observed.get(desired.name), desired):
                self.kube.patch_workload(desired.kind, namespace, desired.name,
                                         scale_patch(desired))
        for gone in plan.delete:
            LOG.info("deleting %s %s/%s", gone.kind, namespace, gone.name)
            self.kube.delete_workload(gone.kind, namespace, gone.name)
        self._write_status(emd, plan)

    def _write_status(self, emd: dict[str, Any], plan: DeploymentPlan) -> None:
        meta = emd["metadata"]
        new = plan.status.wire()
        old = {k: v for k, v in (emd.get("status") or {}).items() if v is not None}
        if new == old:   # nothing to write; a restarted operator still exports the status
            self.metrics.observe_deployment(meta["namespace"], meta["name"], new, False)
            return
        patch = dict(new)
        for key in old:
            patch.setdefault(key, None)
        self.kube.patch_edge_status(meta["namespace"], meta["name"], patch)
        self.metrics.observe_deployment(meta["namespace"], meta["name"], new, any(
            reason == "RolledBack" for _, reason, _ in plan.events))
        for kind, reason, message in plan.events:
            self.kube.post_event(emd, kind, reason, message)
            LOG.info("%s/%s %s: %s", meta["namespace"], meta["name"], reason, message)

    def _invalid(self, emd: dict[str, Any], exc: ValidationError) -> None:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"spec.{where}: {first['msg']}" if where else first["msg"]
        status = {"phase": "Degraded", "message": message,
                  "observedGeneration": emd["metadata"].get("generation")}
        if {k: (emd.get("status") or {}).get(k) for k in status} != status:
            self.kube.patch_edge_status(emd["metadata"]["namespace"],
                                        emd["metadata"]["name"], status)
            self.kube.post_event(emd, "Warning", "InvalidSpec", message)


def _needs_scaling(current: ObservedWorkload | None, desired: DesiredWorkload) -> bool:
    if current is None:
        return False
    if desired.kind == "Deployment":
        return current.replicas != (desired.replicas or 0)
    return current.parked != desired.parked


def _hash(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


__all__ = ["DeploymentReconciler", "Resolution"]
