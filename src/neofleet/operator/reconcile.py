"""One reconcile of a CompilationJob: read, plan, apply, write status (no kopf here).

Level-triggered and idempotent: every call recomputes the whole plan from what exists, so
it is safe to call on any event, any number of times, after any crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neofleet.compiler.targets import catalogue as target_catalogue
from neofleet.operator.kube import Kube, utc_now
from neofleet.operator.metrics import OperatorMetrics
from neofleet.operator.planning.compilation import (
    Placement,
    Settings,
    plan_compilation,
)
from neofleet.operator.render.job import compile_job

LOG = logging.getLogger("neofleet.operator")


def placements() -> dict[str, Placement]:
    """The device presets the compile pods accept, for scheduling."""
    return {t.name: Placement(arch=t.arch, gpu=t.device_type == "gpu",
                              cpu_features=t.cpu_features,
                              compute_capability=t.compute_capability)
            for t in target_catalogue() if t.name != "native"}


@dataclass
class Reconciler:
    kube: Kube
    settings: Settings
    metrics: OperatorMetrics
    known: dict[str, Placement]
    # kopf runs handlers for the CJ, its Jobs and its pods concurrently: one at a time per
    # CompilationJob, so each reconcile plans from the status the previous one wrote
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def reconcile(self, namespace: str, name: str) -> None:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        started = time.perf_counter()
        outcome = "error"
        try:
            with lock:
                self._reconcile(namespace, name)
            outcome = "ok"
        finally:
            self.metrics.observe_reconcile("CompilationJob", outcome,
                                           time.perf_counter() - started)

    def resync_forever(self, namespaces: list[str], period_s: float, stop: threading.Event,
                       also: Callable[[list[str]], None] | None = None) -> None:
        """Reconcile everything every ``period_s``: event handlers are not retried, so a
        reconcile that failed on a transient API error is redone here (``also``: the
        EdgeModelDeployments' resync)."""
        while not stop.wait(period_s):
            try:
                for namespace, name in self.kube.list_compilation_jobs(namespaces):
                    self.reconcile(namespace, name)
                if also is not None:
                    also(namespaces)
            except Exception:   # logged; the next round tries again
                LOG.exception("periodic resync failed")

    def _reconcile(self, namespace: str, name: str) -> None:
        cj = self.kube.get_compilation_job(namespace, name)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return   # owner references let the garbage collector remove its Jobs
        jobs = self.kube.observed_jobs(namespace, name)
        plan = plan_compilation(name, int(cj["metadata"].get("generation", 1)),
                                cj.get("spec", {}), cj.get("status"), jobs, self.known.get,
                                self.settings, utc_now())
        for job_name in plan.delete:
            self.kube.delete_job(namespace, job_name)
        for desired in plan.create:
            created = self.kube.create_job(compile_job(desired, cj, self.settings.compiler_image))
            LOG.info("%s Job %s/%s for target %s", "created" if created else "adopted",
                     namespace, desired.name, desired.target)
        status = _status_patch(plan.status.wire(), cj.get("status") or {})
        if status != _comparable(cj.get("status") or {}):
            LOG.info("%s/%s: %s (%s targets succeeded)", namespace, name,
                     plan.status.phase, plan.status.succeeded)
            self.kube.patch_status(namespace, name, status)
            for kind, reason, message in plan.events:
                self.kube.post_event(cj, kind, reason, message)
            self._observe_compiles(cj.get("status") or {}, plan.status.wire())

    def _observe_compiles(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        old = {r["name"]: r.get("phase") for r in before.get("targets", [])}
        for row in after.get("targets", []):
            if row.get("phase") in ("Succeeded", "Failed") and old.get(row["name"]) != row["phase"]:
                self.metrics.observe_compile(row["name"], row["phase"], row.get("startTime"),
                                             row.get("completionTime"))


TOP_LEVEL = ("phase", "observedGeneration", "succeeded", "startTime", "completionTime",
             "conditions", "targets")


def _status_patch(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A merge patch: fields the new status lacks are set to null (removed)."""
    patch = dict(new)
    for key in TOP_LEVEL:
        if key not in patch and key in old:
            patch[key] = None
    return patch


def _comparable(old: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in old.items() if v is not None}
