"""``EdgeModelDeployment`` (short name ``emd``): serve compiled bundles on node pools.

Defined now so both CRDs exist; its controller is the next issue (operator part 2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neofleet.api.common import DNS_LABEL, ApiModel, Condition, Resources, Toleration

PHASES = ("Progressing", "Paused", "Healthy", "Degraded", "RolledBack")
DURATION = r"^([0-9]+(ms|s|m|h))+$"


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


class Metric(ApiModel):
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    query: str | None = Field(default=None, description="PromQL; default: the runtime's own")
    threshold: float | None = None
    compare_with_stable: float | None = Field(default=None, gt=0, description=(
        "fail when the canary's value exceeds the stable revision's times this factor"))


class Analysis(ApiModel):
    prometheus: str | None = Field(default=None, pattern=r"^https?://\S+$")
    metrics: list[Metric] = Field(default_factory=list, max_length=16)
    interval: str = Field(default="30s", pattern=DURATION)
    failure_limit: int = Field(default=1, ge=0, le=100)
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
    analysis: Analysis | None = None
    auto_rollback: bool = True


class EdgeModelDeploymentSpec(ApiModel):
    model: ModelRef
    pools: list[Pool] = Field(min_length=1, max_length=32)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    rollout: Rollout = Field(default_factory=Rollout)
    paused: bool = False


class PoolStatus(ApiModel):
    name: str
    target: str | None = None
    artifact_digest: str | None = None
    desired: int = 0
    updated: int = 0
    ready: int = 0


class EdgeModelDeploymentStatus(ApiModel):
    phase: Literal[PHASES] | None = None  # type: ignore[valid-type]
    observed_generation: int | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    current_step: int | None = None
    pools: list[PoolStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
