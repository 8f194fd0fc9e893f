"""NVIDIA GPUs of this host, and whether a GPU bundle may run on them.

The GPUs are read from the CUDA driver itself (``libcuda.so.1``, with ctypes): no
``nvidia-smi``, no CUDA toolkit, no torch, no TVM. ``CUDA_VISIBLE_DEVICES`` applies, as
for every CUDA program.

A bundle's CUDA kernels are machine code (SASS) for one architecture, with no PTX to JIT
(TVM compiles them with ``nvcc -gencode arch=compute_XY,code=sm_XY``). CUDA's binary
compatibility rule then decides where they run: code for ``sm_XY`` runs on GPUs of compute
capability X.Z with Z >= Y; code for an architecture-specific target (``sm_90a``) only on
X.Y exactly. ``check_gpu_bundle`` applies it and refuses everything else with a message
naming the bundle's GPU and what this host has: there is never a CPU fallback.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Any

from neofleet.bundle.meta import CompiledMeta
from neofleet.runtime.errors import IncompatibleBundleError

_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_CUDA_SUCCESS = 0
_NO_DRIVER = "libcuda.so.1 not found: no NVIDIA driver on this host"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def describe(self) -> str:
        return f"GPU {self.index}: {self.name} (compute capability {self.cc})"


@dataclass(frozen=True)
class HostGpus:
    """What the CUDA driver reported: the GPUs, its CUDA version, or why there are none."""

    gpus: tuple[GpuInfo, ...] = ()
    driver_cuda_version: str | None = None
    problem: str = ""

    def describe(self) -> str:
        if not self.gpus:
            return f"no NVIDIA GPU ({self.problem or 'the CUDA driver reports none'})"
        driver = f"; CUDA driver {self.driver_cuda_version}" if self.driver_cuda_version else ""
        return ", ".join(g.describe() for g in self.gpus) + driver


def detect_gpus() -> HostGpus:
    """Ask the CUDA driver for its GPUs; never raises."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return HostGpus(problem=_NO_DRIVER)
    if hasattr(cuda, "neofleet_cuda_stub"):  # the compiler's link stand-in, not a driver
        return HostGpus(problem=_NO_DRIVER)
    try:
        return _query(cuda)
    except (OSError, AttributeError) as exc:
        return HostGpus(problem=f"the CUDA driver could not be queried: {exc}")


def _query(cuda: Any) -> HostGpus:
    def check(result: int, call: str) -> str:
        if result == _CUDA_SUCCESS:
            return ""
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        return f"{call} failed: {(name.value or b'').decode() or result}"

    version = ctypes.c_int()
    driver = None
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == _CUDA_SUCCESS:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    problem = check(cuda.cuInit(0), "cuInit")
    if problem:
        return HostGpus(driver_cuda_version=driver, problem=problem)
    count = ctypes.c_int()
    problem = check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if problem:
        return HostGpus(driver_cuda_version=driver, problem=problem)
    gpus = []
    for index in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if (cuda.cuDeviceGet(ctypes.byref(device), index) != _CUDA_SUCCESS
                or cuda.cuDeviceGetName(name, 256, device) != _CUDA_SUCCESS
                or cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)
                != _CUDA_SUCCESS
                or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)
                != _CUDA_SUCCESS):
            continue
        gpus.append(GpuInfo(index, name.value.decode(errors="replace"), (major.value,
                                                                          minor.value)))
    return HostGpus(tuple(gpus), driver, "" if gpus else "the CUDA driver reports 0 devices")


_ARCH = re.compile(r"sm_(\d+?)(\d)(a?)$")


def parse_cuda_arch(arch: str) -> tuple[int, int, bool]:
    """``"sm_75"`` -> (7, 5, False); ``"sm_90a"`` -> (9, 0, True); ``"sm_120"`` ->
    (12, 0, False)."""
    match = _ARCH.match(arch)
    if not match:
        raise IncompatibleBundleError(f"not a CUDA architecture: {arch!r}")
    return int(match[1]), int(match[2]), bool(match[3])


def kernels_run_on(arch: str, compute_capability: tuple[int, int]) -> bool:
    """CUDA's binary compatibility rule for SASS built for ``arch``."""
    major, minor, specific = parse_cuda_arch(arch)
    if specific:
        return compute_capability == (major, minor)
    return compute_capability[0] == major and compute_capability[1] >= minor


@dataclass(frozen=True)
class GpuRequirement:
    """What a GPU bundle needs, read from its verified meta."""

    target: str
    arch: str  # the CUDA architecture its kernels were built for
    compute_capability: str
    gpu_kind: str

    def describe(self) -> str:
        return (f"target {self.target} ({self.gpu_kind}: {self.arch}, compute capability "
                f"{self.compute_capability})")


def gpu_requirement(meta: CompiledMeta) -> GpuRequirement:
    target = meta.neofleet.target
    options = meta.neofleet.backend_options
    cc = str(target.get("compute_capability") or "")
    built: dict[str, Any] = _dict(options.get("cuda"))
    spec: dict[str, Any] = _dict(target.get("cuda"))
    arch = str(built.get("arch") or spec.get("arch") or ("sm_" + cc.replace(".", "") if cc
                                                           else ""))
    if not arch:
        raise IncompatibleBundleError(f"GPU bundle for target {meta.requirements.target_device} "
                                      "names no compute capability in compiled.meta")
    return GpuRequirement(target=meta.requirements.target_device, arch=arch,
                          compute_capability=cc or "{}.{}".format(*parse_cuda_arch(arch)[:2]),
                          gpu_kind=str(target.get("description") or "NVIDIA GPU"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def gpu_mismatch(requirement: GpuRequirement, host: HostGpus, dev_id: int) -> str | None:
    """Why the bundle cannot run on GPU ``dev_id`` of ``host`` (None when it can); pure."""
    if not host.gpus:
        return (f"bundle was built for {requirement.describe()}; this host has "
                f"{host.describe()}. GPU bundles never fall back to the CPU: run it on a node "
                "with that GPU")
    gpu = next((g for g in host.gpus if g.index == dev_id), None)
    if gpu is None:
        return (f"bundle was built for {requirement.describe()}; dev_id={dev_id} does not "
                f"exist here (this host has {host.describe()})")
    if not kernels_run_on(requirement.arch, gpu.compute_capability):
        return (f"bundle was built for {requirement.describe()}; {gpu.describe()} here "
                f"cannot run {requirement.arch} kernels (this host has {host.describe()})")
    return None


def check_gpu_bundle(meta: CompiledMeta, dev_type: str, dev_id: int,
                     host: HostGpus | None = None) -> None:
    """Refuse a GPU bundle with a clear message unless ``dev_type`` is "gpu" and GPU
    ``dev_id`` of this host can run its kernels."""
    requirement = gpu_requirement(meta)
    host = detect_gpus() if host is None else host
    if dev_type != "gpu":
        raise IncompatibleBundleError(
            f"bundle was built for {requirement.describe()}; it runs only with dev_type='gpu' "
            f"on a matching GPU, not with dev_type={dev_type!r} (no CPU fallback; this host "
            f"has {host.describe()})")
    problem = gpu_mismatch(requirement, host, dev_id)
    if problem:
        raise IncompatibleBundleError(problem)
