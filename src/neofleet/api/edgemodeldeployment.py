"""``EdgeModelDeployment`` (short name ``emd``): serve compiled bundles on node pools.

For each pool the operator picks the bundle whose target fits the pool's nodes, runs the
runtime as a Deployment or a DaemonSet, and rolls new revisions out per ``spec.rollout``
(``Rolling``, or ``Canary`` steps gated on Prometheus analysis, with automatic rollback).
Promote and abort with annotations (``PROMOTE_ANNOTATION``, ``ABORT_ANNOTATION``): any new
value acts once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neofleet.api.common import DNS_LABEL, ApiModel, Condition, Resources, Toleration

PHASES = ("Progressing", "Paused", "Healthy", "Degraded", "RolledBack")
PROMOTE_ANNOTATION = "neofleet.io/promote"     # value "full" skips every remaining step
ABORT_ANNOTATION = "neofleet.io/abort"
DURATION = r"^([0-9]+(ms|s|m|h))+$"
# The default canary analysis (the planner measures exactly these; the CRD's description
# is written from them, so the two cannot disagree).
DEFAULT_P99_FACTOR = 2.0        # canary p99 at most this many times the stable revision's
DEFAULT_P99_SLACK_S = 0.005     # ... and always allowed this much above it
DEFAULT_ERROR_RATIO = 0.01      # server-side failures over answered requests
DEFAULT_METRICS_DESCRIPTION = (
    f"default: p99-latency (fails above {DEFAULT_P99_FACTOR:g}x the stable revision's p99, "
    f"never below the stable's + {DEFAULT_P99_SLACK_S * 1000:g} ms) and error-ratio "
    f"(fails above {DEFAULT_ERROR_RATIO:.0%})")


class CompilationJobRef(ApiModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253)


class ArtifactRef(ApiModel):
    target: str = Field(max_length=64)
    uri: str = Field(pattern=r"^oci://[^@]+@sha256:[a-f0-9]{64}$")


class ModelRef(ApiModel):
    compilation_job_ref: CompilationJobRef | None = None
    artifacts: list[ArtifactRef] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if (self.compilation_job_ref is None) == (not self.artifacts):
            raise ValueError("give exactly one of compilationJobRef or artifacts")
        return self


class Pool(ApiModel):
    name: str = Field(pattern=DNS_LABEL, max_length=40)
    node_selector: dict[str, str] = Field(default_factory=dict)
    target: str = Field(default="auto", max_length=64,
                        description="a target name, or auto: chosen from the nodes' labels")
    mode: Literal["Deployment", "DaemonSet"] = "Deployment"
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources | None = None
    tolerations: list[Toleration] = Field(default_factory=list)


class RuntimeSettings(ApiModel):
    image: str = "ghcr.io/neofleet/neofleet-runtime:0.1.0"
    port: int = Field(default=8080, ge=1024, le=65535)
    threads: int | None = Field(default=None, ge=1, le=256)
    max_batch: int | None = Field(default=None, ge=1, le=4096)
    batch_timeout_ms: float | None = Field(default=None, ge=0, le=10000)
    shutdown_delay_seconds: float = Field(default=3, ge=0, le=300, description=(
        "after SIGTERM the server keeps serving this long while endpoints drop it"))
    bundle_cache_claim: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63,
                                           description=(
        "a PersistentVolumeClaim (ReadWriteMany, or a node-local volume) mounted as the "
        "bundle cache by every revision's pods: a rollback finds the stable bundle there "
        "without downloading it; default: an emptyDir per pod"))


class Metric(ApiModel):
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    query: str | None = Field(default=None, description="PromQL; default: the runtime's own")
    threshold: float | None = None
    compare_with_stable: float | None = Field(default=None, gt=0, description=(
        "fail when the canary's value exceeds the stable revision's times this factor"))


class Analysis(ApiModel):
    prometheus: str | None = Field(default=None, pattern=r"^https?://\S+$", description=(
        "Prometheus base URL; default: the operator's --prometheus-url"))
    metrics: list[Metric] = Field(default_factory=list, max_length=16,
                                  description=DEFAULT_METRICS_DESCRIPTION)
    interval: str = Field(default="30s", pattern=DURATION)
    window: str = Field(default="1m", pattern=DURATION,
                        description="the rate() window of the default queries")
    failure_limit: int = Field(default=1, ge=0, le=100)
    inconclusive_limit: int = Field(default=3, ge=0, le=100, description=(
        "consecutive measurements without data (the canary not scraped yet, Prometheus "
        "unreachable) tolerated; one more counts as a failure"))
    count: int = Field(default=3, ge=1, le=1000)


class Pause(ApiModel):
    duration: str | None = Field(default=None, pattern=DURATION,
                                 description="absent: paused until promoted")


class Step(ApiModel):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: Pause | None = None
    analysis: Analysis | None = None


class Rollout(ApiModel):
    strategy: Literal["Canary", "Rolling"] = "Rolling"
    steps: list[Step] = Field(default_factory=list, max_length=32)
    analysis: Analysis | None = Field(default=None, description=(
        "background analysis: measured at every interval while a canary runs"))
    auto_rollback: bool = True
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86400, description=(
        "a step whose canary pods are not ready by then fails the rollout"))
    pool_order: Literal["Sequential", "Parallel"] = Field(default="Sequential", description=(
        "Sequential: the pools in list order, each through every step, so a bad revision "
        "stops at the first pool; Parallel: every pool takes each step together"))


class EdgeModelDeploymentSpec(ApiModel):
    model: ModelRef
    pools: list[Pool] = Field(min_length=1, max_length=32)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    rollout: Rollout = Field(default_factory=Rollout)
    paused: bool = False


class PoolStatus(ApiModel):
    name: str
    mode: str | None = None
    target: str | None = None
    artifact_uri: str | None = None
    artifact_digest: str | None = None
    stable_ready: int = 0
    canary_ready: int = 0
    desired: int = 0
    weight: int | None = None
    message: str | None = None


class Measurement(ApiModel):
    time: str
    metric: str
    value: float | None = None
    limit: float | None = None
    ok: bool
    inconclusive: bool = Field(default=False, description="no data: neither pass nor fail")


class RolloutStatus(ApiModel):
    revision: str
    pool_index: int = 0
    step_index: int = 0
    step_start_time: str | None = None
    started_time: str | None = None
    last_measured_time: str | None = None
    successes: int = 0
    failures: int = 0
    inconclusive: int = Field(default=0, description="consecutive rounds without data")
    measurements: list[Measurement] = Field(default_factory=list)


class EdgeModelDeploymentStatus(ApiModel):
    phase: Literal[PHASES] | None = None  # type: ignore[valid-type]
    observed_generation: int | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    rolled_back_revision: str | None = None
    current_step: int | None = None
    rollout: RolloutStatus | None = None
    handled_promote: str | None = None
    handled_abort: str | None = None
    message: str | None = None
    pools: list[PoolStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
