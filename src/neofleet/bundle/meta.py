"""``compiled.meta``: DLR's keys plus what neofleet records about a compile.

DLR users know ``Requirements.TargetDeviceType`` and ``Model.Inputs/Outputs``; neofleet
adds a ``Neofleet`` section with the target descriptor, backend, compiler versions,
source model digest, verification, benchmark and every candidate that was tried.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neofleet.bundle.errors import BundleFormatError

META_NAME = "compiled.meta"
GRAPH_NAME = "compiled_model.json"
META_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class TensorSpec(_Model):
    name: str
    shape: list[int]
    dtype: str


class Requirements(_Model):
    target_device: str = Field(alias="TargetDevice")
    target_device_type: Literal["cpu", "gpu"] = Field(alias="TargetDeviceType")
    target_arch: str = Field(alias="TargetArch")


class ModelSignature(_Model):
    inputs: list[TensorSpec] = Field(alias="Inputs")
    outputs: list[TensorSpec] = Field(alias="Outputs")


class Compilation(_Model):
    created_time: str = Field(alias="CreatedTime")
    compile_seconds: float = Field(alias="CompileSeconds")


# A GPU bundle built on a host without a matching GPU: not run at all. ``neofleet serve``
# runs the bundle's verification samples on the target GPU before it reports ready.
NOT_RUN_NO_GPU = "not-run-no-gpu"


class Verification(_Model):
    passed: bool
    method: str  # "host", "qemu-aarch64", "gpu", "not-run", or NOT_RUN_NO_GPU
    samples: int
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    rtol: float
    atol: float
    message: str = ""
    # GPU bundles: True when the samples ran on a matching GPU at compile time, False when
    # they did not (the runtime must then run them on the target GPU first); None for CPU
    # bundles (``method`` says how they ran).
    hardware_verified: bool | None = None


class Benchmark(_Model):
    host: str
    threads: int
    batch_inputs: dict[str, list[int]]
    median_ms: float
    p90_ms: float
    runs: int


class CandidateReport(_Model):
    backend: str
    # "unverified": built, but this host could not run it (a GPU target without the GPU)
    status: Literal["selected", "verified", "unverified", "failed", "not-applicable"]
    message: str = ""
    build_seconds: float | None = None
    verification: Verification | None = None
    benchmark: Benchmark | None = None


class Selection(_Model):
    rule: str
    reason: str


class NeofleetSection(_Model):
    meta_version: int = META_VERSION
    target: dict[str, Any]
    backend: str
    backend_options: dict[str, Any] = {}
    compiler: dict[str, str]
    framework: str
    source: dict[str, str]
    verification: Verification
    benchmark: Benchmark | None = None
    candidates: list[CandidateReport] = []
    selection: Selection | None = None


class CompiledMeta(_Model):
    requirements: Requirements = Field(alias="Requirements")
    model: ModelSignature = Field(alias="Model")
    compilation: Compilation = Field(alias="Compilation")
    neofleet: NeofleetSection = Field(alias="Neofleet")

    def to_bytes(self) -> bytes:
        return (self.model_dump_json(by_alias=True, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CompiledMeta:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise BundleFormatError(f"{META_NAME} is invalid: {exc}") from exc
