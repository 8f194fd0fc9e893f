"""Plan a CompilationJob (pure): which compile Jobs should exist, and what the status says.

One Job per target, named from the CompilationJob, the target and a hash of everything
that goes into that target's compile (model, target, output, verify settings, compiler
image): the same inputs give the same name, so a restarted operator finds ("adopts") the
Jobs it made and never makes a second one; a changed target gets a new name, and its old
Job is deleted. A result is trusted only when the pod reported an artifact digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from neofleet.api.compilationjob import (
    Artifact,
    CompilationJobSpec,
    CompilationJobStatus,
    CompileTarget,
    TargetStatus,
)
from neofleet.operator.conditions import condition

ARCH_LABELS = {"x86_64": "amd64", "aarch64": "arm64"}
NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."
DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class Placement:
    """What the catalogue says about a device preset, for scheduling its compile pod."""

    arch: str
    gpu: bool = False
    cpu_features: tuple[str, ...] = ()
    compute_capability: str | None = None


Catalogue = Callable[[str], Placement | None]


@dataclass(frozen=True)
class ObservedJob:
    name: str
    target: str
    inputs_hash: str
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure: str = ""                    # the Job's Failed condition reason/message
    result: dict[str, Any] | None = None  # the pod's termination message, parsed
    waiting: str = ""                    # why its pod is not running (unschedulable …)
    start_time: str | None = None
    completion_time: str | None = None


@dataclass(frozen=True)
class DesiredJob:
    name: str
    target: str
    inputs_hash: str
    request: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    resources: dict[str, dict[str, str]]
    deadline_s: int
    backoff_limit: int


@dataclass
class CompilationPlan:
    create: list[DesiredJob] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: CompilationJobStatus = field(default_factory=CompilationJobStatus)
    events: list[tuple[str, str, str]] = field(default_factory=list)   # (type, reason, msg)


@dataclass(frozen=True)
class Settings:
    compiler_image: str
    insecure_registry: bool = False


def plan_compilation(name: str, generation: int, spec: dict[str, Any],
                     previous: dict[str, Any] | None, jobs: list[ObservedJob],
                     catalogue: Catalogue, settings: Settings, now: str) -> CompilationPlan:
    before = CompilationJobStatus.model_validate(previous or {})
    try:
        parsed = CompilationJobSpec.model_validate(spec)
    except ValidationError as exc:
        return _invalid(generation, before, "InvalidSpec", _first_error(exc), now, jobs)
    unknown = [t.device for t in parsed.targets if t.device and catalogue(t.device) is None]
    if unknown:
        return _invalid(generation, before, "UnknownTarget",
                        f"unknown device preset(s) {unknown}; see `neofleet targets`", now, jobs)
    plan = CompilationPlan()
    wanted = {t.name: _desired(name, t, parsed, catalogue, settings) for t in parsed.targets}
    current = {j.target: j for j in jobs if wanted.get(j.target) is not None
               and j.inputs_hash == wanted[j.target].inputs_hash}
    plan.delete = sorted(j.name for j in jobs if current.get(j.target) is not j)
    running = sum(1 for j in current.values() if not (j.succeeded or j.failed))
    rows = []
    for target in parsed.targets:
        job = current.get(target.name)
        if job is None and running < parsed.parallelism:
            plan.create.append(wanted[target.name])
            running += 1
        rows.append(_row(target.name, wanted[target.name], job, job is not None
                         or wanted[target.name] in plan.create))
    plan.status = _status(generation, before, rows, now)
    plan.events = _events(before, plan.status)
    return plan


def inputs_hash(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def job_name(cj: str, target: str, digest: str) -> str:
    """``<cj>-<target>-<hash>``, shortened to fit the 63 characters of a label value."""
    return f"{cj[:30].rstrip('-')}-{target[:20].rstrip('-')}-{digest}"


def _desired(cj: str, target: CompileTarget, spec: CompilationJobSpec, catalogue: Catalogue,
             settings: Settings) -> DesiredJob:
    request = {"model": spec.model.wire(), "target": target.wire(),
               "output": spec.output.wire(), "verify": spec.verify.wire()}
    for key in ("nodeSelector", "tolerations", "resources"):
        request["target"].pop(key, None)
    digest = inputs_hash(request, settings.compiler_image, spec.stopping_condition.wire(),
                         spec.backoff_limit)
    placement = catalogue(target.device) if target.device else None
    selector, tolerations, resources = _placement(target, placement)
    return DesiredJob(name=job_name(cj, target.name, digest), target=target.name,
                      inputs_hash=digest, request=request, node_selector=selector,
                      tolerations=tolerations, resources=resources,
                      deadline_s=spec.stopping_condition.max_runtime_seconds,
                      backoff_limit=spec.backoff_limit)


def _placement(target: CompileTarget, placement: Placement | None
               ) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, dict[str, str]]]:
    arch = placement.arch if placement else (target.platform.arch if target.platform else "")
    selector = {"kubernetes.io/arch": ARCH_LABELS[arch]} if arch in ARCH_LABELS else {}
    resources = target.resources.wire() if target.resources else {}
    tolerations = [t.wire() for t in target.tolerations]
    if placement is not None:
        selector.update({f"{NFD_CPUID}{f}": "true" for f in placement.cpu_features})
        if placement.gpu:
            # engines are bound to the GPU architecture: compile on that kind of GPU
            major, _, minor = (placement.compute_capability or "").partition(".")
            selector.update({"nvidia.com/gpu.compute.major": major,
                             "nvidia.com/gpu.compute.minor": minor})
            resources.setdefault("limits", {})["nvidia.com/gpu"] = "1"
            tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists",
                                "effect": "NoSchedule"})
    selector.update(target.node_selector)
    return selector, tolerations, resources


def _row(target: str, desired: DesiredJob, job: ObservedJob | None,
         started: bool) -> TargetStatus:
    row = TargetStatus(name=target, job=desired.name, inputs_hash=desired.inputs_hash)
    if job is None:
        row.phase = "Pending"
        row.message = "compile Job created" if started else "waiting for a free compile slot"
        return row
    row.start_time, row.completion_time = job.start_time, job.completion_time
    if job.succeeded:
        return _succeeded(row, job)
    if job.failed:
        return _failed(row, job)
    row.phase = "Compiling"
    if job.waiting:
        row.reason, row.message = "WaitingForNode", job.waiting
    return row


def _succeeded(row: TargetStatus, job: ObservedJob) -> TargetStatus:
    result = job.result or {}
    artifact = result.get("artifact") if result.get("ok") else None
    digest = artifact.get("digest", "") if isinstance(artifact, dict) else ""
    uri = artifact.get("uri", "") if isinstance(artifact, dict) else ""
    if not (isinstance(digest, str) and digest.startswith(DIGEST_PREFIX) and len(digest) == 71
            and isinstance(uri, str) and uri.endswith("@" + digest)):
        row.phase, row.reason = "Failed", "ResultUntrusted"
        row.message = "the compile pod exited 0 but reported no artifact digest"
        return row
    row.phase = "Succeeded"
    row.artifact = Artifact(uri=uri, digest=digest)
    row.backend = str(result.get("backend") or "")
    row.compiler = {str(k): str(v) for k, v in (result.get("compiler") or {}).items()}
    row.verification = {str(k): float(v) for k, v in (result.get("verification") or {}).items()}
    bench = result.get("benchmark_ms")
    row.benchmark_ms = float(bench) if isinstance(bench, int | float) else None
    row.hardware_verified = result.get("hardware_verified") is not False
    row.message = (f"verified ({result.get('verification_method', 'host')}), pushed"
                   if row.hardware_verified else
                   "built and pushed, NOT verified on the target hardware (none here): the "
                   "first runtime pod on the target runs the verification samples")
    return row


def _failed(row: TargetStatus, job: ObservedJob) -> TargetStatus:
    row.phase = "Failed"
    result = job.result or {}
    if result and not result.get("ok", True):
        row.reason = str(result.get("reason") or "CompileFailed")
        row.message = str(result.get("message") or "")[:1000]
    else:
        row.reason = "JobFailed"
        row.message = job.failure or "the compile Job failed without a result"
    return row


def _status(generation: int, before: CompilationJobStatus, rows: list[TargetStatus],
            now: str) -> CompilationJobStatus:
    done = [r for r in rows if r.phase in ("Succeeded", "Failed")]
    ok = [r for r in rows if r.phase == "Succeeded"]
    failed = [r for r in rows if r.phase == "Failed"]
    if len(done) < len(rows):
        phase = "Compiling" if any(r.phase == "Compiling" for r in rows) or done else "Pending"
    else:
        phase = "Succeeded" if not failed else ("Failed" if not ok else "PartiallySucceeded")
    status = CompilationJobStatus(
        phase=phase, observed_generation=generation, succeeded=f"{len(ok)}/{len(rows)}",
        start_time=before.start_time or now, targets=rows,
        completion_time=(before.completion_time or now) if len(done) == len(rows) else None)
    status.conditions = _conditions(status, before, failed, generation, now)
    return status


def _conditions(status: CompilationJobStatus, before: CompilationJobStatus,
                failed: list[TargetStatus], generation: int, now: str) -> list[Any]:
    prev = before.conditions
    waiting = [r for r in status.targets if r.reason == "WaitingForNode"]
    ready_reason = {"Succeeded": "AllTargetsSucceeded", "PartiallySucceeded": "SomeTargetsFailed",
                    "Failed": "AllTargetsFailed"}.get(status.phase, status.phase)
    compiling = status.phase in ("Pending", "Compiling")
    compiling_reason = ("WaitingForNode" if waiting else status.phase) if compiling \
        else "NotCompiling"
    compiling_msg = "; ".join(f"{r.name}: {r.message}" for r in waiting) or \
        f"{status.succeeded} targets succeeded"
    failed_msg = "; ".join(f"{r.name}: {r.reason}: {r.message}" for r in failed)
    return [
        condition("Ready", status.phase == "Succeeded", ready_reason,
                  f"{status.succeeded} targets succeeded", generation, now, prev),
        condition("Compiling", compiling, compiling_reason, compiling_msg, generation, now, prev),
        condition("Failed", bool(failed), "TargetFailed" if failed else "NoFailures",
                  failed_msg, generation, now, prev),
    ]


def _events(before: CompilationJobStatus, after: CompilationJobStatus
            ) -> list[tuple[str, str, str]]:
    old = {r.name: r.phase for r in before.targets}
    events = []
    for row in after.targets:
        if old.get(row.name) == row.phase:
            continue
        if row.phase == "Succeeded" and row.artifact is not None:
            events.append(("Normal", "TargetSucceeded",
                           f"{row.name}: {row.backend} bundle {row.artifact.uri}"))
        elif row.phase == "Failed":
            events.append(("Warning", "TargetFailed", f"{row.name}: {row.reason}: {row.message}"))
        elif row.phase == "Compiling":
            events.append(("Normal", "TargetCompiling", f"{row.name}: Job {row.job}"))
    if before.phase != after.phase and after.phase in ("Succeeded", "PartiallySucceeded",
                                                       "Failed"):
        kind = "Normal" if after.phase == "Succeeded" else "Warning"
        events.append((kind, after.phase, f"{after.succeeded} targets succeeded"))
    return events


def _invalid(generation: int, before: CompilationJobStatus, reason: str, message: str,
             now: str, jobs: list[ObservedJob]) -> CompilationPlan:
    status = CompilationJobStatus(phase="Failed", observed_generation=generation,
                                  succeeded="0/0", start_time=before.start_time or now,
                                  completion_time=before.completion_time or now)
    status.conditions = [
        condition("Ready", False, reason, message, generation, now, before.conditions),
        condition("Compiling", False, "NotCompiling", message, generation, now,
                  before.conditions),
        condition("Failed", True, reason, message, generation, now, before.conditions)]
    events = [] if before.phase == "Failed" else [("Warning", reason, message)]
    return CompilationPlan(delete=sorted(j.name for j in jobs), status=status, events=events)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"spec.{where}: {error['msg']}" if where else f"spec: {error['msg']}"
