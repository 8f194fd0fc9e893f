"""TensorRT backend: ONNX → a serialized TensorRT engine in ``compiled.plan``.

Follows TensorRT's documented Python API: ``trt.Builder`` → ``create_network`` (explicit
batch: the flag on TensorRT 8.x, implied on 10.x) → ``trt.OnnxParser.parse_from_file`` →
a builder config (workspace pool limit, ``BuilderFlag.FP16`` when the ``fp16`` compiler
option asks for it, builder optimization level) with one optimization profile covering
the inputs' dynamic dims → ``build_serialized_network``.

An engine is bound to the GPU it was built on (compute capability) and to the TensorRT
release that built it, so this backend builds only on a host whose GPU has the target's
compute capability, with a TensorRT of the target's release line, and records in
``compiled.meta`` the TensorRT version, the compute capability and GPU, and the CUDA
runtime and driver versions. The runtime refuses the engine anywhere else.

``tensorrt`` is imported lazily. Where it does not import, ``require_tensorrt`` fails at
once with ``BackendUnavailableError``, naming the image that installs it; with backend
``auto`` the backend reports itself not applicable (with that reason, which the bundle's
selection record repeats) and the target's other GPU backend is built instead.

Compiler options (``--compiler-option KEY=VALUE``, ``spec.targets[].compilerOptions``;
other backends' keys are ignored):

    fp16=true                     let TensorRT pick FP16 kernels (TensorRT 10.x; verify with
                                  a looser --rtol/--atol)
    workspace_mib=N               builder workspace pool limit
    builder_optimization_level=N  0..5 (TensorRT's default: 3)
    max_batch=N [min_batch=M]     widen dim 0 of every input the model leaves dynamic to
                                  M..N (default M=1), optimized for the declared batch
    profile.INPUT=MIN:OPT:MAX     explicit shapes for one input, e.g.
                                  profile.image=1x3x224x224:8x3x224x224:32x3x224x224

The profile always contains the declared shape (what the bundle is verified with).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.errors import (
    BackendBuildError,
    BackendUnavailableError,
    CompilerOptionsError,
)
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.inputs import MAX_DIM, MAX_ELEMENTS
from neofleet.compiler.targets import Target, host_arch
from neofleet.runtime.backends.tensorrt import (
    HostFacts,
    describe_gpu,
    host_facts,
    import_tensorrt,
    make_logger,
    sm,
    version_prefix_matches,
    version_tuple,
)

ARTIFACT = "compiled.plan"
GPU_IMAGE = "compiler-image/Dockerfile.gpu"
NOT_INSTALLED = ("TensorRT is not installed in this compile image (the tensorrt module does "
                 f"not import): build the compile image with {GPU_IMAGE}, which installs it "
                 "from NVIDIA's index")
# Named I/O tensors and execute_async_v3 (what the runtime uses) arrived in TensorRT 8.5.
MIN_TRT = (8, 5)

Shape = tuple[int, ...]


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or ``BackendUnavailableError`` at once saying how to get it."""
    trt, why = import_tensorrt()
    if trt is None:
        raise BackendUnavailableError(f"{NOT_INSTALLED} ({why})")
    return trt


# --------------------------------------------------------------------------- options (pure)


@dataclass(frozen=True)
class ProfileShapes:
    min: Shape
    opt: Shape
    max: Shape

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class TrtOptions:
    fp16: bool = False
    workspace_mib: int | None = None
    builder_optimization_level: int | None = None
    min_batch: int | None = None
    max_batch: int | None = None
    profiles: dict[str, ProfileShapes] = field(default_factory=dict)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_options(options: Mapping[str, str]) -> TrtOptions:
    """Read this backend's compiler options; other keys belong to other backends."""
    fp16_text = str(options.get("fp16", "false")).strip().lower()
    if fp16_text not in _TRUE | _FALSE:
        raise CompilerOptionsError(f"fp16={options['fp16']!r}: use true or false")
    profiles = {key.removeprefix("profile."): _parse_profile(key, str(value))
                for key, value in options.items() if key.startswith("profile.")}
    if "" in profiles:
        raise CompilerOptionsError("profile.INPUT=MIN:OPT:MAX needs an input name")
    parsed = TrtOptions(
        fp16=fp16_text in _TRUE,
        workspace_mib=_int_option(options, "workspace_mib", 1, 1 << 20),
        builder_optimization_level=_int_option(options, "builder_optimization_level", 0, 5),
        min_batch=_int_option(options, "min_batch", 1, MAX_DIM),
        max_batch=_int_option(options, "max_batch", 1, MAX_DIM),
        profiles=profiles)
    if parsed.min_batch is not None and parsed.max_batch is None:
        raise CompilerOptionsError("min_batch needs max_batch")
    if parsed.max_batch is not None and parsed.max_batch < (parsed.min_batch or 1):
        raise CompilerOptionsError(f"max_batch={parsed.max_batch} is below "
                                   f"min_batch={parsed.min_batch or 1}")
    return parsed


def _int_option(options: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    if key not in options:
        return None
    try:
        value = int(str(options[key]).strip())
    except ValueError:
        raise CompilerOptionsError(f"{key}={options[key]!r}: expected an integer") from None
    if not low <= value <= high:
        raise CompilerOptionsError(f"{key}={value}: expected {low}..{high}")
    return value


def _parse_profile(key: str, text: str) -> ProfileShapes:
    parts = text.split(":")
    if len(parts) != 3:
        raise CompilerOptionsError(f"{key}={text!r}: expected MIN:OPT:MAX, e.g. "
                                   "1x3x224x224:8x3x224x224:32x3x224x224")
    shapes = []
    for part in parts:
        try:
            shape = tuple(int(d) for d in part.lower().split("x"))
        except ValueError:
            raise CompilerOptionsError(f"{key}={text!r}: {part!r} is not a shape like "
                                       "1x3x224x224") from None
        if any(d < 1 or d > MAX_DIM for d in shape) or math.prod(shape) > MAX_ELEMENTS:
            raise CompilerOptionsError(f"{key}={text!r}: dims must be 1..{MAX_DIM} and at "
                                       f"most {MAX_ELEMENTS} elements")
        shapes.append(shape)
    low, opt, high = shapes
    if not len(low) == len(opt) == len(high):
        raise CompilerOptionsError(f"{key}={text!r}: MIN, OPT and MAX must have one rank")
    if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
        raise CompilerOptionsError(f"{key}={text!r}: needs MIN <= OPT <= MAX in every dim")
    return ProfileShapes(low, opt, high)


def plan_profiles(network_inputs: Mapping[str, Sequence[int]], declared: Sequence[TensorSpec],
                  options: TrtOptions) -> dict[str, ProfileShapes]:
    """The optimization profile: min/opt/max shapes per network input (pure).

    ``network_inputs`` are the dims TensorRT's parser sees (-1 where the model leaves a dim
    dynamic). Static dims must equal the declaration. Dynamic dims are fixed to the
    declared size unless ``max_batch`` widens dim 0 (``min_batch``..``max_batch``, opt =
    declared) or ``profile.INPUT`` gives the three shapes. Every profile contains the
    declared shape and keeps static dims static.
    """
    specs = {s.name: s for s in declared}
    unknown = sorted(set(options.profiles) - set(network_inputs))
    if unknown:
        raise CompilerOptionsError(f"profile.{unknown[0]}: the model has no input "
                                   f"{unknown[0]!r} (inputs: {', '.join(network_inputs)})")
    plan: dict[str, ProfileShapes] = {}
    widened = False
    for name, raw_dims in network_inputs.items():
        dims = tuple(int(d) for d in raw_dims)
        spec = specs.get(name)
        if spec is None:
            raise BackendBuildError(f"TensorRT sees an input {name!r} the model signature "
                                    f"does not declare ({', '.join(specs)})")
        want = tuple(spec.shape)
        if len(dims) != len(want) or any(d not in (-1, w) for d, w in zip(dims, want,
                                                                          strict=False)):
            raise BackendBuildError(f"TensorRT sees input {name} as {_dims(dims)}; it was "
                                    f"declared {_dims(want)}")
        if name in options.profiles:
            plan[name] = _explicit(name, dims, want, options.profiles[name])
        elif options.max_batch is not None and dims and dims[0] == -1:
            low = options.min_batch or 1
            if not low <= want[0] <= options.max_batch:
                raise CompilerOptionsError(f"input {name}: the declared batch {want[0]} is "
                                           f"outside min_batch..max_batch ({low}.."
                                           f"{options.max_batch})")
            plan[name] = ProfileShapes((low, *want[1:]), want, (options.max_batch, *want[1:]))
            widened = True
        else:
            plan[name] = ProfileShapes(want, want, want)
    if options.max_batch is not None and not widened:
        raise CompilerOptionsError(
            "max_batch widens dim 0 of inputs the model leaves dynamic, and this model has "
            "none: " + ", ".join(f"{n} {_dims(d)}" for n, d in network_inputs.items()))
    return plan


def _explicit(name: str, dims: Shape, want: Shape, shapes: ProfileShapes) -> ProfileShapes:
    if len(shapes.min) != len(want):
        raise CompilerOptionsError(f"profile.{name}: rank {len(shapes.min)}, the input has "
                                   f"rank {len(want)} ({_dims(want)})")
    for i, d in enumerate(dims):
        if d != -1 and not shapes.min[i] == shapes.max[i] == d:
            raise CompilerOptionsError(f"profile.{name}: dim {i} is static ({d}) in the "
                                       "model and cannot vary")
    if not all(a <= w <= c for a, w, c in zip(shapes.min, want, shapes.max, strict=True)):
        raise CompilerOptionsError(f"profile.{name}: {_dims(shapes.min)}..{_dims(shapes.max)} "
                                   f"does not contain the declared shape {_dims(want)}")
    return shapes


def _dims(shape: Sequence[int]) -> str:
    return "x".join("?" if d < 0 else str(d) for d in shape) or "scalar"


# --------------------------------------------------------------------------- applicability


def build_blocker(target: Target, has_onnx: bool, host: HostFacts) -> str | None:
    """Why this host cannot build a TensorRT engine for ``target`` (pure), or None."""
    if target.device_type != "gpu" or (target.accelerator or "nvidia") != "nvidia":
        return "the tensorrt backend builds engines for NVIDIA GPU targets only"
    if not has_onnx:
        return "no ONNX form of the model for TensorRT's ONNX parser"
    if target.trt_version and version_tuple(target.trt_version)[:2] < MIN_TRT:
        return (f"{target.name} runs TensorRT {target.trt_version}; the tensorrt backend needs "
                f"TensorRT >= {'.'.join(map(str, MIN_TRT))} (named I/O tensors, "
                "execute_async_v3)")
    if host.trt_version is None:
        return f"{NOT_INSTALLED} ({host.trt_error})"
    if target.arch != host_arch():
        return (f"TensorRT builds engines on the device they run on and cannot cross-compile: "
                f"build {target.name} ({target.arch}) on a {target.arch} host with its GPU")
    if not target.compute_capability:
        return f"target {target.name} names no GPU compute capability"
    gpu = host.gpu(0)
    if gpu is None or gpu.cc != target.compute_capability:
        return (f"TensorRT builds an engine for the GPU it runs on: {target.name} needs "
                f"{sm(target.compute_capability)} and this host has {host.describe_gpu(0)}; "
                f"run the compile pod on a node of {target.name}'s GPU kind")
    if target.trt_version and not version_prefix_matches(target.trt_version, host.trt_version):
        return (f"{target.name} runs TensorRT {target.trt_version} and engines only load on "
                f"the release that built them; this compile image has TensorRT "
                f"{host.trt_version}: use a compile image with TensorRT {target.trt_version}")
    return None


def _onnx_file(source: SourceModel) -> Path | None:
    """The original ONNX file keeps dynamic dims (and TensorRT folds shape arithmetic
    itself); other frameworks use their exported, static ONNX form."""
    if source.framework == "onnx" and source.path.suffix == ".onnx":
        return source.path
    return source.onnx_path


# --------------------------------------------------------------------------- the backend


class TensorRtBackend:
    name = "tensorrt"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if target.device_type != "gpu":  # decided without probing the host
            return "the tensorrt backend builds engines for NVIDIA GPU targets only"
        return build_blocker(target, _onnx_file(source) is not None, host_facts())

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        trt = require_tensorrt()
        settings = parse_options(options.compiler_options)
        host = host_facts()
        blocker = build_blocker(target, _onnx_file(source) is not None, host)
        if blocker:
            raise BackendUnavailableError(blocker)
        onnx_file = _onnx_file(source)
        assert onnx_file is not None and host.trt_version is not None
        gpu = host.gpu(0)
        assert gpu is not None
        start = time.perf_counter()
        logger = make_logger(trt, lambda line: options.progress(f"[{target.name}] {line}"))
        trt.init_libnvinfer_plugins(logger, "")  # ops the parser maps to TensorRT plugins
        builder = trt.Builder(logger)
        major = version_tuple(host.trt_version)[0]
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        options.progress(f"[{target.name}] tensorrt: parsing {onnx_file.name}")
        if not parser.parse_from_file(str(onnx_file)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendBuildError("TensorRT's ONNX parser rejected the model: "
                                    + "; ".join(errors[:5] or logger.errors[-3:]))
        inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
                  for i in range(network.num_inputs)}
        outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        plan = plan_profiles(inputs, source.inputs, settings)
        config = self._config(trt, builder, settings, target, options)
        if any(-1 in dims for dims in inputs.values()):
            profile = builder.create_optimization_profile()
            for name, shapes in plan.items():
                profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
            config.add_optimization_profile(profile)
        options.progress(f"[{target.name}] tensorrt: building the engine on {describe_gpu(gpu)}"
                         f" with TensorRT {host.trt_version}")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendBuildError("TensorRT could not build an engine: "
                                    + ("; ".join(logger.errors[-3:]) or "no detail logged"))
        dest = workdir / ARTIFACT
        dest.write_bytes(bytes(memoryview(serialized)))
        return Artifact(
            backend=self.name, files={ARTIFACT: dest}, artifact=ARTIFACT,
            options={**_recorded_options(host, settings, plan, onnx_file, source),
                     # the engine's tensor names, in the order of compiled.meta's inputs
                     # and outputs (exported models may name them differently)
                     "engine_inputs": list(inputs), "engine_outputs": outputs},
            versions={"tensorrt": host.trt_version, "cuda": host.cuda_runtime or "unknown"},
            graph={"backend": self.name, "source_ops": source.ops,
                   "network_layers": int(network.num_layers), "precision":
                   "fp16" if settings.fp16 else "fp32"},
            build_seconds=time.perf_counter() - start)

    @staticmethod
    def _config(trt: Any, builder: Any, settings: TrtOptions, target: Target,
                options: BuildOptions) -> Any:
        config = builder.create_builder_config()
        if settings.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                         settings.workspace_mib << 20)
        if settings.builder_optimization_level is not None:
            config.builder_optimization_level = settings.builder_optimization_level
        if settings.fp16:
            flag = getattr(trt.BuilderFlag, "FP16", None)
            if flag is None:
                raise BackendBuildError(
                    f"fp16=true: TensorRT {trt.__version__} has no BuilderFlag.FP16 (TensorRT "
                    "11 builds strongly typed networks only): convert the model to mixed "
                    "precision first, or use a compile image with TensorRT 10.x")
            if not getattr(builder, "platform_has_fast_fp16", True):
                options.progress(f"[{target.name}] tensorrt: this GPU has no fast FP16; "
                                 "TensorRT may keep FP32 kernels")
            config.set_flag(flag)
        return config


def _recorded_options(host: HostFacts, settings: TrtOptions, plan: Mapping[str, ProfileShapes],
                      onnx_file: Path, source: SourceModel) -> dict[str, Any]:
    """What ``compiled.meta`` records: what the engine is bound to, and how it was built.
    The runtime reads ``trt_version`` and ``compute_capability`` from here."""
    gpu = host.gpu(0)
    assert gpu is not None
    return {
        "trt_version": host.trt_version,
        "compute_capability": gpu.cc,
        "sm": sm(gpu.cc),
        "gpu": gpu.name,
        "cuda_version": host.cuda_runtime,
        "cuda_driver": host.cuda_driver,
        "precision": "fp16" if settings.fp16 else "fp32",
        "workspace_mib": settings.workspace_mib,
        "builder_optimization_level": settings.builder_optimization_level,
        "profile": {name: shapes.to_json() for name, shapes in plan.items()},
        "onnx": "original" if onnx_file == source.path else "exported",
    }
