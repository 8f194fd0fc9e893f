"""The named target catalogue, in the spirit of Neo's ``TargetDevice``.

Each preset says what a compiled bundle may assume about the machine: architecture, CPU
features (NFD ``cpu-cpuid`` names) and ``mcpu``, accelerator, cross toolchain, and the
backends that apply in order of preference. ``native`` describes this host; LLVM
misdetects Sapphire Rapids as ``rocketlake`` here, so ``mcpu`` is chosen from
``/proc/cpuinfo`` flags instead of LLVM's guess.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from neofleet.compiler.errors import UnknownTargetError

Arch = Literal["x86_64", "aarch64"]
AARCH64_CROSS = "aarch64-linux-gnu-g++"


@dataclass(frozen=True)
class CudaSpec:
    """How TVM generates CUDA for a GPU preset: the values of TVM 0.27's own target tag
    (``tvm_tag``, e.g. ``tvm.target.Target("nvidia/nvidia-t4")``), copied here so the
    catalogue stays plain data; a test checks them against TVM's tags."""

    arch: str  # "sm_75"; TVM's H100 tag uses "sm_90a" (Hopper-only features)
    tvm_tag: str | None = None
    registers_per_block: int = 65536
    max_shared_memory_per_block: int = 49152
    max_threads_per_block: int = 1024
    thread_warp_size: int = 32
    l2_cache_size_bytes: int | None = None

    def tvm_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "arch": self.arch, "max_shared_memory_per_block": self.max_shared_memory_per_block,
            "max_threads_per_block": self.max_threads_per_block,
            "thread_warp_size": self.thread_warp_size,
            "registers_per_block": self.registers_per_block}
        if self.l2_cache_size_bytes:
            attrs["l2_cache_size_bytes"] = self.l2_cache_size_bytes
        return attrs


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: Arch
    device_type: Literal["cpu", "gpu"] = "cpu"
    mcpu: str | None = None
    mattr: tuple[str, ...] = ()
    cpu_features: tuple[str, ...] = ()
    accelerator: str | None = None
    compute_capability: str | None = None
    cuda_version: str | None = None
    trt_version: str | None = None
    cross_toolchain: str | None = None
    backends: tuple[str, ...] = ("onnxruntime", "openvino", "tvm", "tl2cgen")
    buildable: bool = True
    num_cores: int | None = field(default=None, compare=False)
    cuda: CudaSpec | None = None

    def tvm_target(self) -> dict[str, Any]:
        """The TVM 0.27 target dict (``tvm.target.Target(d)``); GPU presets: ``cuda`` with
        the preset's CPU as ``host``."""
        if self.cuda is not None:
            return {"kind": "cuda", **self.cuda.tvm_attrs(), "host": self._llvm_target()}
        return self._llvm_target()

    def _llvm_target(self) -> dict[str, Any]:
        target: dict[str, Any] = {"kind": "llvm"}
        if self.arch == "aarch64":
            target["mtriple"] = "aarch64-linux-gnu"
        if self.mcpu:
            target["mcpu"] = self.mcpu
        if self.mattr:
            target["mattr"] = list(self.mattr)
        if self.num_cores:
            target["num-cores"] = self.num_cores
        return target

    def descriptor(self) -> dict[str, Any]:
        """What the bundle's meta records about the target."""
        doc = {k: v for k, v in asdict(self).items() if v not in (None, (), [])}
        doc["tvm_target"] = self.tvm_target()
        return doc


_X86: Arch = "x86_64"
_A64: Arch = "aarch64"
_AVX2 = ("AVX", "AVX2", "FMA3")
_AVX512 = (*_AVX2, "AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL")


def _gpu(name: str, description: str, arch: Arch, cc: str, cuda: str, trt: str,
         spec: CudaSpec, mcpu: str | None = None) -> Target:
    """A GPU preset, built by the GPU backends (tensorrt, tvm-cuda)."""
    return Target(name, description, arch, device_type="gpu", mcpu=mcpu, accelerator="nvidia",
                  compute_capability=cc, cuda_version=cuda, trt_version=trt,
                  cross_toolchain=AARCH64_CROSS if arch == "aarch64" else None,
                  backends=("tensorrt", "tvm-cuda"), cuda=spec)


CATALOGUE: tuple[Target, ...] = (
    Target("x86_64", "any x86-64 CPU (baseline SSE2)", _X86, mcpu="x86-64"),
    Target("x86_64-avx2", "x86-64-v3: AVX2, FMA, BMI2 (Haswell, Zen and later)", _X86,
           mcpu="x86-64-v3", cpu_features=_AVX2),
    Target("x86_64-avx512", "x86-64-v4: AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Zen 4 and later)",
           _X86, mcpu="x86-64-v4", cpu_features=_AVX512),
    Target("aarch64", "any 64-bit ARM CPU with NEON (Armv8-A)", _A64, mattr=("+neon",),
           cpu_features=("ASIMD",), cross_toolchain=AARCH64_CROSS),
    Target("rasp4b", "Raspberry Pi 4 Model B (Cortex-A72, 64-bit OS)", _A64,
           mcpu="cortex-a72", mattr=("+neon",), cpu_features=("ASIMD",),
           cross_toolchain=AARCH64_CROSS),
    _gpu("jetson-nano", "NVIDIA Jetson Nano (Maxwell, sm_53)", _A64, "5.3", "10.2", "8.2",
         CudaSpec("sm_53", "nvidia/jetson-nano", registers_per_block=32768),
         mcpu="cortex-a57"),
    _gpu("jetson-xavier", "NVIDIA Jetson AGX Xavier (Volta, sm_72)", _A64, "7.2", "11.4",
         "8.5", CudaSpec("sm_72", "nvidia/jetson-agx-xavier"), mcpu="carmel"),
    _gpu("jetson-orin-nano", "NVIDIA Jetson Orin Nano (Ampere, sm_87)", _A64, "8.7", "12.2",
         "8.6", CudaSpec("sm_87", "nvidia/jetson-orin-nano"), mcpu="cortex-a78ae"),
    _gpu("nvidia-t4", "NVIDIA T4 (Turing, sm_75) on x86-64", _X86, "7.5", "12.2", "10.0",
         CudaSpec("sm_75", "nvidia/nvidia-t4")),
    _gpu("nvidia-a100", "NVIDIA A100 (Ampere, sm_80) on x86-64", _X86, "8.0", "12.2", "10.0",
         CudaSpec("sm_80", "nvidia/nvidia-a100", l2_cache_size_bytes=41943040)),
    _gpu("nvidia-h100", "NVIDIA H100 (Hopper, sm_90) on x86-64", _X86, "9.0", "12.2", "10.0",
         CudaSpec("sm_90a", "nvidia/nvidia-h100", l2_cache_size_bytes=52428800)),
)


def catalogue() -> tuple[Target, ...]:
    return (*CATALOGUE, native_target())


def get_target(name: str) -> Target:
    if name == "native":
        return native_target()
    for target in CATALOGUE:
        if target.name == name:
            return target
    known = ", ".join(t.name for t in catalogue())
    raise UnknownTargetError(f"unknown target {name!r}; known targets: {known}")


def host_arch() -> Arch:
    machine = platform.machine().lower()
    return "aarch64" if machine in {"aarch64", "arm64"} else "x86_64"


def host_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """CPU flags of this host in lower case (``avx2``, ``asimd``, ...)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def x86_mcpu_for_flags(flags: Iterable[str]) -> str:
    """Choose an LLVM ``mcpu`` from cpuinfo flags (LLVM's own guess is wrong here)."""
    have = set(flags)
    if {"amx_tile", "avx512_fp16"} <= have:
        return "sapphirerapids"
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= have:
        return "x86-64-v4"
    if {"avx2", "fma", "bmi2"} <= have:
        return "x86-64-v3"
    return "x86-64"


def native_target() -> Target:
    flags = host_cpu_flags()
    arch = host_arch()
    import os

    cores = os.cpu_count() or 1
    if arch == "aarch64":
        return Target("native", "this host (aarch64)", "aarch64", mcpu="generic",
                      mattr=("+neon",), num_cores=cores)
    features = tuple(sorted(f for f in _AVX512 if _nfd_to_flag(f) in flags))
    return Target("native", "this host", "x86_64", mcpu=x86_mcpu_for_flags(flags),
                  cpu_features=features, num_cores=cores)


def _nfd_to_flag(feature: str) -> str:
    return {"FMA3": "fma"}.get(feature, feature.lower())


def host_can_run(target: Target, flags: frozenset[str] | None = None) -> bool:
    """True when this host can run ``target``'s CPU artifacts natively (and time them)."""
    if target.device_type != "cpu" or target.arch != host_arch():
        return False
    have = host_cpu_flags() if flags is None else flags
    if target.arch == "aarch64":
        return True
    return all(_nfd_to_flag(f) in have for f in target.cpu_features)


def with_cores(target: Target, cores: int) -> Target:
    return replace(target, num_cores=cores)
