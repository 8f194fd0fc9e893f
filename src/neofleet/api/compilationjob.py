"""``CompilationJob`` (short name ``cj``): compile one model for several targets.

The spec says where the model is, which targets to build for and where the bundles go;
the operator runs one compile Job per target and reports each target's verified artifact
(OCI URI and digest), backend, verification and benchmark in ``status.targets[]``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from neofleet.api.common import DNS_LABEL, SHA256, ApiModel, Condition, Resources, Toleration

FRAMEWORKS = ("onnx", "pytorch", "tflite", "xgboost", "lightgbm", "sklearn", "treelite")
BACKENDS = ("auto", "tvm", "onnxruntime", "openvino", "tl2cgen", "tvm-cuda", "tensorrt")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
MODEL_URI = r"^(oci://[^@]+@sha256:[a-f0-9]{64}|https://\S+|s3://[^/]+/\S+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/\S+|file:///\S+)$"
REPOSITORY = r"^(oci://)?[a-zA-Z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$"
PHASES = ("Pending", "Compiling", "Succeeded", "PartiallySucceeded", "Failed")
TARGET_PHASES = ("Pending", "Compiling", "Succeeded", "Failed")


class ModelInput(ApiModel):
    name: str = Field(min_length=1, max_length=128)
    shape: list[int] = Field(min_length=1, max_length=8,
                             json_schema_extra={"items": {"type": "integer", "minimum": -1}})
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]


class ModelSource(ApiModel):
    uri: str = Field(pattern=MODEL_URI, description=(
        "oci://REPO@sha256:…, https://…, s3://BUCKET/KEY, pvc://CLAIM/PATH or file:///PATH"))
    framework: Literal[FRAMEWORKS]  # type: ignore[valid-type]
    inputs: list[ModelInput] = Field(default_factory=list, max_length=16)
    sha256: str | None = Field(default=None, pattern=SHA256,
                               description="sha256 of the model file, checked in the pod")
    credentials_secret: str | None = Field(
        default=None, pattern=DNS_LABEL, max_length=63, description=(
            "s3:// models: a Secret in this namespace whose keys AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and optional AWS_SESSION_TOKEN, AWS_REGION and "
            "AWS_ENDPOINT_URL_S3 (S3-compatible stores) become the compile pod's environment"))


class Platform(ApiModel):
    os: Literal["linux"] = "linux"
    arch: Literal["x86_64", "aarch64"]
    accelerator: Literal["none", "cuda", "tensorrt"] = "none"
    mcpu: str | None = Field(default=None, max_length=64)
    mattr: list[str] = Field(default_factory=list, max_length=32)
    compute_capability: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+$")
    trt_version: str | None = None
    cuda_version: str | None = None


class Tuning(ApiModel):
    trials: int = Field(default=0, ge=0, le=100000)


class CompileTarget(ApiModel):
    model_config = ApiModel.model_config | {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.device) != has(self.platform)",
         "message": "give exactly one of device or platform"}]}}
    name: str = Field(pattern=DNS_LABEL, max_length=40)
    device: str | None = Field(default=None, max_length=64,
                               description="a preset of the target catalogue (`neofleet targets`)")
    platform: Platform | None = None
    backend: Literal[BACKENDS] = "auto"  # type: ignore[valid-type]
    compiler_options: dict[str, str] = Field(default_factory=dict)
    tuning: Tuning | None = None
    resources: Resources | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @model_validator(mode="after")
    def _device_or_platform(self) -> CompileTarget:
        if (self.device is None) == (self.platform is None):
            raise ValueError(f"target {self.name}: give exactly one of device or platform")
        return self


class Output(ApiModel):
    repository: str = Field(pattern=REPOSITORY, description=(
        "OCI repository the bundles are pushed to, by digest (oci://HOST[:PORT]/PATH)"))


class SampleData(ApiModel):
    uri: str = Field(pattern=MODEL_URI, description=(
        "an .npz of named arrays, one per input, each with a leading batch of samples; "
        "fetched like the model (same schemes, same credentials)"))
    sha256: str = Field(pattern=SHA256, description="pinned: checked in the pod")


class Verify(ApiModel):
    samples: int = Field(default=3, ge=1, le=100, description=(
        "generated samples to verify on when sampleData is not given"))
    rtol: float = Field(default=1e-3, gt=0, le=1)
    atol: float = Field(default=1e-4, ge=0, le=1)
    sample_data: SampleData | None = Field(default=None, description=(
        "representative inputs: candidates are verified on them (up to 32) and timed on "
        "the first; needed for models whose inputs random values break (token ids, rates)"))


class StoppingCondition(ApiModel):
    max_runtime_seconds: int = Field(default=3600, ge=60, le=86400)


class CompilationJobSpec(ApiModel):
    model: ModelSource
    targets: list[CompileTarget] = Field(min_length=1, max_length=32, json_schema_extra={
        "x-kubernetes-validations": [{"rule": "self.all(t, self.exists_one(u, u.name == t.name))",
                                      "message": "target names must be unique"}]})
    output: Output
    verify: Verify = Field(default_factory=Verify)
    stopping_condition: StoppingCondition = Field(default_factory=StoppingCondition)
    backoff_limit: int = Field(default=1, ge=0, le=10)
    parallelism: int = Field(default=4, ge=1, le=64,
                             description="targets compiled at the same time")

    @model_validator(mode="after")
    def _unique_targets(self) -> CompilationJobSpec:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            repeated = sorted(n for n in set(names) if names.count(n) > 1)
            raise ValueError(f"target names repeat: {repeated}")
        return self


class Artifact(ApiModel):
    uri: str
    digest: str = Field(pattern=r"^sha256:[a-f0-9]{64}$")


class TargetStatus(ApiModel):
    name: str
    phase: Literal[TARGET_PHASES] = "Pending"  # type: ignore[valid-type]
    job: str | None = None
    inputs_hash: str | None = None
    artifact: Artifact | None = None
    backend: str | None = None
    compiler: dict[str, str] = Field(default_factory=dict)
    verification: dict[str, float] = Field(default_factory=dict)
    hardware_verified: bool | None = Field(default=None, description=(
        "false: built without the target hardware (e.g. a GPU bundle); the first runtime "
        "pod checks the bundle's verification samples before any traffic"))
    benchmark_ms: float | None = None
    reason: str | None = None
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None


class CompilationJobStatus(ApiModel):
    phase: Literal[PHASES] = "Pending"  # type: ignore[valid-type]
    observed_generation: int | None = None
    succeeded: str = "0/0"
    start_time: str | None = None
    completion_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    targets: list[TargetStatus] = Field(default_factory=list)
