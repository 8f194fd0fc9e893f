"""Plan an EdgeModelDeployment (pure): which runtime workloads exist at what size, and the
status, from the spec, the last status, the resolved artifacts and what is running.

A **revision** is a hash of every pool's artifact and the runtime settings; its workloads
are named ``<emd>-<pool>-<revision>`` (a Deployment, or a DaemonSet), so a restarted
operator finds them again. The first revision is created at full size and becomes
``stableRevision`` once ready. A new revision rolls out per ``spec.rollout``:

- ``Rolling`` is one step: the new revision at full size, then the old one is removed.
- ``Canary`` walks ``steps`` (``setWeight``, ``pause``, ``analysis``), then promotes. A
  Deployment pool with N replicas runs ceil(N x weight / 100) canary replicas and the rest
  stable; a DaemonSet pool runs the canary DaemonSet on that share of its nodes (sorted by
  name) beside the stable one, whose pods stay (a rollback re-downloads nothing there).
- Pools go one after the other (``Sequential``: each through every step) or together.
  A promoted pool runs the canary at full size and parks its stable workload (0 replicas,
  or a DaemonSet selecting no node) until every pool is done, so a rollback can restore it.
- A failed analysis (more failures than ``failureLimit``) or the abort annotation rolls
  every pool back to the stable revision when ``autoRollback`` is on (phase
  ``RolledBack``; the revision is not tried again until the spec changes it); without it
  the rollout halts in ``Degraded``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from neofleet.api.edgemodeldeployment import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Analysis,
    EdgeModelDeploymentSpec,
    EdgeModelDeploymentStatus,
    Measurement,
    Pool,
    PoolStatus,
    RolloutStatus,
    Step,
)
from neofleet.operator.conditions import condition
from neofleet.operator.planning.analysis import describe, verdict
from neofleet.operator.planning.artifacts import Resolution

MAX_MEASUREMENTS = 12
POLL_S = 2.0


@dataclass(frozen=True)
class ObservedWorkload:
    name: str
    kind: str                    # Deployment | DaemonSet
    pool: str
    revision: str
    desired: int = 0
    ready: int = 0
    replicas: int | None = None      # a Deployment's spec.replicas
    parked: bool = False             # a DaemonSet selecting no node


@dataclass(frozen=True)
class DesiredWorkload:
    """A workload to create or patch. ``artifact`` is None for a stable workload that is
    only scaled (its pod template is never rewritten)."""

    name: str
    kind: str
    pool: Pool
    revision: str
    replicas: int | None = None            # Deployment
    nodes: tuple[str, ...] | None = None   # DaemonSet limited to these nodes (canary)
    parked: bool = False                   # DaemonSet selecting no node
    artifact: Resolution | None = None


@dataclass(frozen=True)
class World:
    """What the reconciler read, besides the object."""

    resolutions: Sequence[Resolution]
    pool_nodes: Mapping[str, Sequence[str]]
    workloads: Sequence[ObservedWorkload]
    annotations: Mapping[str, str]
    now: str
    measurements: Sequence[Measurement] = ()


@dataclass
class DeploymentPlan:
    apply: list[DesiredWorkload] = field(default_factory=list)
    delete: list[ObservedWorkload] = field(default_factory=list)
    status: EdgeModelDeploymentStatus = field(default_factory=EdgeModelDeploymentStatus)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_s: float | None = None


def revision_of(spec: EdgeModelDeploymentSpec, resolutions: Sequence[Resolution]) -> str:
    parts = [(r.pool, r.candidate.digest if r.candidate else None) for r in resolutions]
    pools = [p.wire() for p in spec.pools]
    for pool in pools:
        pool.pop("replicas", None)      # scaling is not a new revision
    canonical = json.dumps([parts, pools, spec.runtime.wire()], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def workload_name(emd: str, pool: str, revision: str) -> str:
    return f"{emd[:30].rstrip('-')}-{pool[:20].rstrip('-')}-{revision}"


def steps_of(spec: EdgeModelDeploymentSpec) -> list[Step]:
    if spec.rollout.strategy == "Rolling":
        return [Step(set_weight=100)]
    return list(spec.rollout.steps)


def plan_deployment(name: str, generation: int, spec: EdgeModelDeploymentSpec,
                    previous: Mapping[str, Any] | None, world: World) -> DeploymentPlan:
    status = EdgeModelDeploymentStatus.model_validate(previous or {})
    status.observed_generation = generation
    planner = _Planner(name, spec, status, world)
    return planner.plan()


class _Planner:
    def __init__(self, name: str, spec: EdgeModelDeploymentSpec,
                 status: EdgeModelDeploymentStatus, world: World) -> None:
        self.name, self.spec, self.status, self.world = name, spec, status, world
        self.result = DeploymentPlan(status=status)
        self.by_pool = {r.pool: r for r in world.resolutions}
        # pools without an artifact get no workload; the others are served
        self.pools = [p for p in spec.pools
                      if (r := self.by_pool.get(p.name)) is not None and r.candidate]
        self.wanted = revision_of(spec, world.resolutions)
        self.verifying: set[str] = set()   # pools whose first pod verifies the bundle

    # -- top level -------------------------------------------------------------------
    def plan(self) -> DeploymentPlan:
        unresolved = [r for r in self.world.resolutions if r.candidate is None]
        self._artifacts_condition(unresolved)
        self.status.phase, self.status.message = None, None
        stable = self.status.stable_revision
        if not self.pools:
            self._hold(stable, "no pool has an artifact that fits it")
        else:
            wanted = self.wanted
            if stable is None:
                self._first(wanted)
            elif wanted == stable:
                self._steady(stable)
            elif wanted == self.status.rolled_back_revision:
                degraded = next((c for c in self.status.conditions
                                 if c.type == "Degraded" and c.status == "True"), None)
                self._hold(stable, degraded.message if degraded else
                           f"revision {wanted} was rolled back; change the spec to retry")
                self.status.phase = "RolledBack"
            else:
                self._rollout(stable, wanted)
        if unresolved and self.status.phase == "Healthy":
            self.status.phase = "Degraded"
            self.status.message = (f"pools without an artifact: "
                                   f"{', '.join(r.pool for r in unresolved)}")
        self._pool_rows()
        return self.result

    def _first(self, revision: str) -> None:
        self.status.canary_revision = None
        self._keep_only({revision})
        for pool in self.pools:
            self._full(pool, revision, with_artifact=True)
        if self._all_ready(revision):
            self.status.stable_revision = revision
            self._event("Normal", "Deployed", f"revision {revision} serves every pool")
            self._healthy()
        elif self.verifying:
            self._progressing("VerifyingOnHardware", self._verifying_message(revision))
        else:
            self._progressing("FirstDeployment", f"creating revision {revision}")

    def _steady(self, stable: str) -> None:
        if self.status.canary_revision:
            self._event("Normal", "RolloutCancelled",
                        f"the spec is back at the stable revision {stable}; canary "
                        f"{self.status.canary_revision} removed")
        self.status.canary_revision = None
        # status.rollout stays: the last rollout and its measurements, for the record
        self.status.current_step = None
        self._keep_only({stable})
        for pool in self.pools:
            self._full(pool, stable, with_artifact=False)
        if self._all_ready(stable):
            self._healthy()
        else:
            self._progressing("PodsNotReady", f"waiting for revision {stable} to be ready")

    def _hold(self, stable: str | None, why: str) -> None:
        """Keep the stable revision at full size and the canary out; change nothing else."""
        self.status.canary_revision = None
        self.status.current_step = None
        if stable is None:
            self.status.phase = "Degraded"
            self.status.message = why
            return
        self._keep_only({stable})
        for pool in self.pools:
            self._full(pool, stable, with_artifact=False)
        self.status.phase = "Degraded"
        self.status.message = why

    # -- a rollout ---------------------------------------------------------------------
    def _rollout(self, stable: str, canary: str) -> None:
        rollout = self.status.rollout
        if rollout is None or rollout.revision != canary or self.status.canary_revision is None:
            rollout = RolloutStatus(revision=canary, step_start_time=self.world.now,
                                    started_time=self.world.now)
            self._event("Normal", "RolloutStarted",
                        f"rolling revision {canary} out over stable {stable} "
                        f"({self.spec.rollout.strategy})")
        self.status.rollout = rollout
        self.status.canary_revision = canary
        self._keep_only({stable, canary})
        abort = self._new_annotation(ABORT_ANNOTATION, "handled_abort")
        if abort is not None:
            self._rollback(stable, canary, f"aborted by annotation {ABORT_ANNOTATION}={abort}")
            return
        self._record(rollout)
        limit = self._limit("failure_limit")
        if rollout.failures > limit:
            self._analysis_failed(stable, canary, rollout)
            return
        self._advance(rollout)
        if self._stuck(rollout):
            why = (f"the canary pods of step {rollout.step_index} were not ready within "
                   f"{self.spec.rollout.progress_deadline_seconds} s")
            if self.spec.rollout.auto_rollback:
                self._rollback(stable, canary, why)
                return
            self.status.phase, self.status.message = "Degraded", why
        self._scale(stable, canary, rollout)
        if rollout.pool_index >= len(self._pool_groups()):
            self._complete(stable, canary)

    def _advance(self, rollout: RolloutStatus) -> None:
        steps = steps_of(self.spec)
        promote = self._new_annotation(PROMOTE_ANNOTATION, "handled_promote")
        if promote == "full":
            rollout.pool_index, rollout.step_index = len(self._pool_groups()), len(steps)
            self._event("Normal", "Promoted", "promoted in full by annotation")
            return
        if self.spec.paused:
            self.status.phase = "Paused"
            self.status.message = "spec.paused is true"
            return
        group = self._pool_groups()[min(rollout.pool_index, len(self._pool_groups()) - 1)]
        while rollout.pool_index < len(self._pool_groups()):
            done = self._step_done(rollout, steps, group, promote is not None)
            promote = None                   # a promote annotation ends one step
            if not done:
                return
            self._next_step(rollout, steps)
            group = self._pool_groups()[min(rollout.pool_index, len(self._pool_groups()) - 1)]

    def _stuck(self, rollout: RolloutStatus) -> bool:
        """A step that waits for canary pods has waited past the progress deadline."""
        steps = steps_of(self.spec)
        waits_for_pods = rollout.step_index >= len(steps) or \
            steps[rollout.step_index].set_weight is not None
        return (waits_for_pods and rollout.pool_index < len(self._pool_groups())
                and _elapsed(rollout.step_start_time, self.world.now)
                > self.spec.rollout.progress_deadline_seconds)

    def _next_step(self, rollout: RolloutStatus, steps: list[Step]) -> None:
        rollout.step_index += 1
        rollout.step_start_time = self.world.now
        rollout.successes = 0
        rollout.last_measured_time = None
        if rollout.step_index > len(steps):      # past the implicit promotion of the group
            rollout.pool_index += 1
            rollout.step_index = 0

    def _step_done(self, rollout: RolloutStatus, steps: list[Step], group: list[Pool],
                   promoted: bool) -> bool:
        canary = rollout.revision
        if rollout.step_index >= len(steps):     # the group's promotion: canary at full
            return all(self._ready(p, canary) >= self._size(p) for p in group)
        step = steps[rollout.step_index]
        if promoted:
            return True
        if step.set_weight is not None:
            return all(self._ready(p, canary) >= self._canary_size(p, step.set_weight)
                       for p in group)
        if step.pause is not None:
            if step.pause.duration is None:
                self.status.phase = "Paused"
                self.status.message = (f"paused at step {rollout.step_index}: "
                                       f"kubectl annotate emd {self.name} "
                                       f"{PROMOTE_ANNOTATION}=$(date +%s) --overwrite")
                return False
            return _elapsed(rollout.step_start_time, self.world.now) >= \
                parse_duration(step.pause.duration)
        if step.analysis is not None:
            return rollout.successes >= step.analysis.count
        return True

    def _scale(self, stable: str, canary: str, rollout: RolloutStatus) -> None:
        groups = self._pool_groups()
        weight = self._weight(rollout)
        for index, group in enumerate(groups):
            for pool in group:
                if index < rollout.pool_index or (index == rollout.pool_index
                                                  and rollout.step_index >= len(steps_of(
                                                      self.spec))):
                    self._promoted(pool, stable, canary)
                elif index == rollout.pool_index:
                    self._split(pool, stable, canary, weight)
                else:
                    self._full(pool, stable, with_artifact=False)
        if self.status.phase == "Paused":
            self._set("Progressing", "True", "RolloutPaused", self.status.message or "")
        elif self.verifying and self.status.phase != "Degraded":
            self._progressing("VerifyingOnHardware", self._verifying_message(canary))
        elif self.status.phase != "Degraded":
            self._progressing("RolloutInProgress",
                              f"revision {canary}: pool group {rollout.pool_index + 1}/"
                              f"{len(groups)}, step {rollout.step_index}, weight {weight}%")
        self.status.current_step = rollout.step_index
        self.result.requeue_s = POLL_S

    def _complete(self, stable: str, canary: str) -> None:
        self.status.stable_revision = canary
        self.status.canary_revision = None
        self.status.current_step = None
        self.result.apply.clear()
        self._keep_only({canary})
        for pool in self.pools:
            self._full(pool, canary, with_artifact=True)
        self._event("Normal", "RolloutCompleted",
                    f"revision {canary} replaced {stable} in every pool")
        self._healthy()

    def _analysis_failed(self, stable: str, canary: str, rollout: RolloutStatus) -> None:
        failed = [m for m in rollout.measurements if not m.ok][-3:]
        detail = "; ".join(describe(m) for m in failed)
        if self.spec.rollout.auto_rollback:
            self._rollback(stable, canary, f"analysis failed {rollout.failures} time(s): "
                                           f"{detail}")
            return
        self._scale(stable, canary, rollout)
        self.status.phase = "Degraded"
        self.status.message = f"analysis failed: {detail}; rollout halted (autoRollback off)"
        self._set("Degraded", "True", "AnalysisFailed", self.status.message)

    def _rollback(self, stable: str, canary: str, why: str) -> None:
        self.result.apply.clear()
        self._keep_only({stable})
        for pool in self.pools:
            self._full(pool, stable, with_artifact=False)
        self.status.rolled_back_revision = canary
        self.status.canary_revision = None
        self.status.current_step = None
        self.status.phase = "RolledBack"
        self.status.message = f"rolled back to {stable}: {why}"
        self._set("Degraded", "True", "RolledBack", self.status.message)
        self._set("Progressing", "False", "RolledBack", self.status.message)
        self._event("Warning", "RolledBack", self.status.message)

    # -- measurements and annotations --------------------------------------------------
    def _record(self, rollout: RolloutStatus) -> None:
        if not self.world.measurements:
            return
        rollout.measurements = [*rollout.measurements, *self.world.measurements][
            -MAX_MEASUREMENTS:]
        rollout.last_measured_time = self.world.now
        found = verdict(self.world.measurements, rollout.inconclusive,
                        self._limit("inconclusive_limit"))
        rollout.inconclusive = rollout.inconclusive + 1 if found == "inconclusive" else 0
        if found == "passed":
            rollout.successes += 1
        elif found == "failed":
            rollout.failures += 1
            bad = [m for m in self.world.measurements if not m.ok]
            self._event("Warning", "AnalysisFailed", "; ".join(describe(m) for m in bad))

    def _limit(self, name: str) -> int:
        """The strictest ``failure_limit`` or ``inconclusive_limit`` of the analyses."""
        analyses = [s.analysis for s in steps_of(self.spec) if s.analysis is not None]
        if self.spec.rollout.analysis is not None:
            analyses.append(self.spec.rollout.analysis)
        return min((int(getattr(a, name)) for a in analyses), default=0)

    def _new_annotation(self, key: str, handled: str) -> str | None:
        value = self.world.annotations.get(key)
        if not value or value == getattr(self.status, handled):
            return None
        setattr(self.status, handled, value)
        return value

    # -- sizes -------------------------------------------------------------------------
    def _pool_groups(self) -> list[list[Pool]]:
        if self.spec.rollout.pool_order == "Parallel":
            return [list(self.pools)]
        return [[pool] for pool in self.pools]

    def _weight(self, rollout: RolloutStatus) -> int:
        steps = steps_of(self.spec)
        weights = [s.set_weight for s in steps[:rollout.step_index + 1]
                   if s.set_weight is not None]
        return weights[-1] if weights else 0

    def _size(self, pool: Pool) -> int:
        if pool.mode == "DaemonSet":
            return len(self.world.pool_nodes.get(pool.name, ()))
        return pool.replicas

    def _canary_size(self, pool: Pool, weight: int) -> int:
        if weight <= 0:
            return 0
        return min(self._size(pool), max(1, math.ceil(self._size(pool) * weight / 100)))

    def _ready(self, pool: Pool, revision: str) -> int:
        return sum(w.ready for w in self.world.workloads
                   if w.pool == pool.name and w.revision == revision)

    def _all_ready(self, revision: str) -> bool:
        return all(self._ready(p, revision) >= self._size(p) for p in self.pools)

    # -- desired workloads -------------------------------------------------------------
    def _desired(self, pool: Pool, revision: str, with_artifact: bool,
                 **scale: Any) -> DesiredWorkload:
        return DesiredWorkload(workload_name(self.name, pool.name, revision), pool.mode, pool,
                               revision, artifact=self.by_pool.get(pool.name)
                               if with_artifact else None, **scale)

    def _full(self, pool: Pool, revision: str, with_artifact: bool) -> None:
        scale: dict[str, Any] = {"replicas": pool.replicas} if pool.mode == "Deployment" else {}
        if with_artifact:
            if self._cap(pool, revision, self._size(pool)) < self._size(pool):
                scale = self._one_pod(pool)
            self.result.apply.append(self._desired(pool, revision, True, **scale))
        else:
            self._full_or_scaled(pool, revision, **scale)

    def _split(self, pool: Pool, stable: str, canary: str, weight: int) -> None:
        size = self._cap(pool, canary, self._canary_size(pool, weight))
        if pool.mode == "Deployment":
            self._full_or_scaled(pool, stable, replicas=pool.replicas - size)
            if size:
                self.result.apply.append(self._desired(pool, canary, True, replicas=size))
            return
        self._full_or_scaled(pool, stable)
        if size:
            nodes = tuple(sorted(self.world.pool_nodes.get(pool.name, ()))[:size])
            self.result.apply.append(self._desired(pool, canary, True, nodes=nodes))

    def _promoted(self, pool: Pool, stable: str, canary: str) -> None:
        scale: dict[str, Any] = {"replicas": pool.replicas} if pool.mode == "Deployment" else {}
        if self._cap(pool, canary, self._size(pool)) < self._size(pool):
            scale = self._one_pod(pool)
        self.result.apply.append(self._desired(pool, canary, True, **scale))
        if self._ready(pool, canary) >= self._size(pool):
            park = {"replicas": 0} if pool.mode == "Deployment" else {"parked": True}
            self._full_or_scaled(pool, stable, **park)
        else:
            self._full_or_scaled(pool, stable)

    def _full_or_scaled(self, pool: Pool, revision: str, **scale: Any) -> None:
        if pool.mode == "Deployment":
            scale.setdefault("replicas", pool.replicas)
        exists = any(w.pool == pool.name and w.revision == revision
                     for w in self.world.workloads)
        if exists:
            self.result.apply.append(self._desired(pool, revision, False, **scale))
        elif revision == self.wanted:
            self.result.apply.append(self._desired(pool, revision, True, **scale))
        # else: an old revision's workload is gone and cannot be rebuilt from this spec

    def _cap(self, pool: Pool, revision: str, size: int) -> int:
        """A bundle not verified on hardware runs on one pod first: its readiness is the
        runtime's check of the bundle's verification samples on the target."""
        resolution = self.by_pool.get(pool.name)
        candidate = resolution.candidate if resolution else None
        if (size <= 1 or revision != self.wanted or candidate is None
                or candidate.hardware_verified or self._ready(pool, revision) >= 1):
            return size
        self.verifying.add(pool.name)
        return 1

    def _one_pod(self, pool: Pool) -> dict[str, Any]:
        if pool.mode == "Deployment":
            return {"replicas": 1}
        return {"nodes": tuple(sorted(self.world.pool_nodes.get(pool.name, ()))[:1])}

    def _verifying_message(self, revision: str) -> str:
        return (f"revision {revision}: one pod per pool first, verifying the bundle on the "
                f"target hardware before more ({', '.join(sorted(self.verifying))})")

    def _keep_only(self, revisions: set[str]) -> None:
        pools = {p.name: p.mode for p in self.pools}
        self.result.delete = [w for w in self.world.workloads
                              if w.revision not in revisions or pools.get(w.pool) != w.kind]

    # -- status ------------------------------------------------------------------------
    def _pool_rows(self) -> None:
        rows = []
        weight = self._weight(self.status.rollout) if self.status.canary_revision and \
            self.status.rollout else None
        for pool in self.spec.pools:
            resolution = self.by_pool.get(pool.name)
            candidate = resolution.candidate if resolution else None
            rows.append(PoolStatus(
                name=pool.name, mode=pool.mode,
                target=candidate.target if candidate else None,
                artifact_uri=candidate.uri if candidate else None,
                artifact_digest=candidate.digest if candidate else None,
                stable_ready=self._ready(pool, self.status.stable_revision or "-"),
                canary_ready=self._ready(pool, self.status.canary_revision or "-"),
                desired=self._size(pool), weight=weight,
                message=resolution.message if resolution and resolution.message else None))
        self.status.pools = rows

    def _artifacts_condition(self, unresolved: list[Resolution]) -> None:
        if unresolved:
            reasons = sorted({r.reason for r in unresolved})
            self._set("ArtifactsResolved", "False", reasons[0],
                      " | ".join(r.message for r in unresolved))
        else:
            self._set("ArtifactsResolved", "True", "ArtifactsResolved",
                      "every pool has an artifact that fits its nodes")

    def _healthy(self) -> None:
        self.status.phase = "Healthy"
        self.status.message = f"revision {self.status.stable_revision} serves every pool"
        self._set("Ready", "True", "AllPoolsReady", self.status.message)
        self._set("Progressing", "False", "RolloutComplete", self.status.message)
        if self.status.rolled_back_revision is None:
            self._set("Degraded", "False", "NoFailures", "no rollback")

    def _progressing(self, reason: str, message: str) -> None:
        self.status.phase = "Progressing"
        self.status.message = message
        self._set("Progressing", "True", reason, message)
        self.result.requeue_s = POLL_S

    def _set(self, kind: str, value: str, reason: str, message: str) -> None:
        kept = [c for c in self.status.conditions if c.type != kind]
        new = condition(kind, value == "True", reason, message,
                        self.status.observed_generation, self.world.now,
                        self.status.conditions)
        self.status.conditions = [*kept, new]

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.result.events.append((kind, reason, message))


def analysis_due(spec: EdgeModelDeploymentSpec, status: Mapping[str, Any] | None,
                 now: str) -> Analysis | None:
    """The analysis to measure now, if a canary is running and its interval has passed."""
    parsed = EdgeModelDeploymentStatus.model_validate(status or {})
    rollout = parsed.rollout
    if rollout is None or parsed.canary_revision != rollout.revision or spec.paused:
        return None
    steps = steps_of(spec)
    step = steps[rollout.step_index] if rollout.step_index < len(steps) else None
    analysis = step.analysis if step is not None and step.analysis else spec.rollout.analysis
    if analysis is None:
        return None
    since = rollout.last_measured_time or rollout.step_start_time
    if since is None or _elapsed(since, now) >= parse_duration(analysis.interval):
        return analysis
    return None


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    index = 0
    while index < len(text):
        char = text[index]
        if char.isdigit():
            number += char
            index += 1
            continue
        unit = "ms" if text.startswith("ms", index) else char
        total += float(number) * units[unit]
        number, index = "", index + len(unit)
    return total


def _elapsed(since: str | None, now: str) -> float:
    if since is None:
        return 0.0
    return (_parse(now) - _parse(since)).total_seconds()


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
