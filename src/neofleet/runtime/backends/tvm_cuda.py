"""Run a ``tvm-cuda`` bundle: a Relax VM executable whose kernels are CUDA, on one GPU.

The bundle carries, besides ``compiled.so``, the ``libtvm_runtime.so`` and the
``libtvm_runtime_cuda.so`` (TVM's CUDA device API and the loader of the CUDA kernels in
``compiled.so``) of the TVM release that compiled it, verified like every other file. The
CUDA runtime library that one links against (``libcudart.so.13`` for TVM 0.27's wheel) and
the driver (``libcuda.so.1``) come from the host: the CUDA driver of a GPU node, and
``libcudart`` from a CUDA installation or the ``nvidia-cuda-runtime`` wheel.

``DLRModel`` has already checked that GPU ``dev_id`` can run the bundle's kernels
(``neofleet.runtime.gpu``). Inputs are copied to the GPU and outputs back; each thread
has its own VM, as on the CPU.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.backends.tvm import (
    TvmBackend,
    TvmRequirements,
    aligned,
    flatten_outputs,
    load_runtime_library,
)
from neofleet.runtime.errors import BackendUnavailableError, IncompatibleBundleError

_lock = threading.Lock()
_cuda_loaded: dict[str, str] = {}


def load_cuda_runtime(cuda_library: Path | None, cudart: str) -> None:
    """Load ``cudart`` (e.g. ``libcudart.so.13``) and TVM's CUDA runtime once per process."""
    with _lock:
        if _cuda_loaded:
            return
        mapped = _mapped("libtvm_runtime_cuda.so")
        if mapped is not None:  # the TVM compiler (``import tvm``) loaded its own already
            _cuda_loaded["path"] = str(mapped)
            return
        if cuda_library is None:
            raise BackendUnavailableError("the bundle carries no libtvm_runtime_cuda.so: "
                                          "recompile it with this neofleet")
        _load_cudart(cudart)
        try:
            ctypes.CDLL(str(cuda_library), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise BackendUnavailableError(f"loading TVM's CUDA runtime failed: {exc}") from exc
        _cuda_loaded["path"] = str(cuda_library)


def _load_cudart(soname: str) -> None:
    for candidate in [soname, *_cudart_candidates(soname)]:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            continue
    raise BackendUnavailableError(
        f"the bundle's CUDA kernels need {soname} (the CUDA runtime TVM's CUDA runtime links "
        f"against) and it was found neither by the dynamic loader nor in site-packages "
        f"(nvidia/*/lib) nor in $CUDA_HOME: install the CUDA runtime of that major version "
        f"(pip install nvidia-cuda-runtime, or the CUDA toolkit) next to an NVIDIA driver "
        "that supports it")


def _cudart_candidates(soname: str) -> list[str]:
    found: list[str] = []
    for entry in sys.path:
        nvidia = Path(entry) / "nvidia"
        if nvidia.is_dir():
            found += sorted(str(p) for p in nvidia.glob(f"*/lib/{soname}"))
    homes = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda",
             *sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))]
    for home in filter(None, homes):
        for lib in ("lib64", "lib"):
            path = Path(home) / lib / soname
            if path.is_file():
                found.append(str(path))
    return found


def _mapped(name: str, maps: Path = Path("/proc/self/maps")) -> Path | None:
    try:
        text = maps.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.endswith("/" + name):
            return Path(line.split(maxsplit=5)[-1])
    return None


class DeviceCopier:
    """Copies between numpy arrays and TVM tensors on one device, with tvm-ffi and the TVM
    runtime's own functions (no ``tvm`` import)."""

    def __init__(self, device_type: str, dev_id: int) -> None:
        import tvm_ffi

        self._ffi = tvm_ffi
        self._alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromTo")
        self.device = tvm_ffi.device(device_type, dev_id)
        self._cpu = tvm_ffi.device("cpu", 0)

    def to_device(self, array: np.ndarray) -> Any:
        host = self._ffi.from_dlpack(aligned(array))
        tensor = self._alloc(self._ffi.Shape(tuple(array.shape)), self._ffi.dtype(str(array.dtype)),
                             self.device, None)
        self._copy(host, tensor)
        return tensor

    def to_host(self, tensor: Any) -> np.ndarray:
        host = self._alloc(self._ffi.Shape(tuple(tensor.shape)), tensor.dtype, self._cpu, None)
        self._copy(tensor, host)
        return np.from_dlpack(host).copy()


class TvmCudaBackend(TvmBackend):
    def __init__(self, artifact: Path, requirements: TvmRequirements, *,
                 cuda_library: Path | None, cudart: str, dev_id: int,
                 num_threads: int | None) -> None:
        check_driver(cudart)
        load_runtime_library(requirements)
        load_cuda_runtime(cuda_library, cudart)
        self._copier = DeviceCopier("cuda", dev_id)
        super().__init__(artifact, requirements, dev_type="gpu", dev_id=dev_id,
                         num_threads=num_threads)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        copier = self._copier
        outputs = self._main()(*[copier.to_device(a) for a in inputs])
        return [copier.to_host(t) for t in flatten_outputs(outputs)]


def check_driver(cudart: str, driver_cuda_version: str | None = None) -> None:
    """Refuse when the NVIDIA driver is older than the CUDA runtime the bundle needs (a
    driver supports the CUDA major versions up to its own)."""
    if driver_cuda_version is None:
        from neofleet.runtime.gpu import detect_gpus

        driver_cuda_version = detect_gpus().driver_cuda_version
    need = int(cudart.rsplit(".", 1)[1])
    if driver_cuda_version and int(driver_cuda_version.split(".")[0]) < need:
        raise IncompatibleBundleError(
            f"the bundle's kernels need the CUDA {need} runtime ({cudart}); this host's NVIDIA "
            f"driver supports CUDA up to {driver_cuda_version}: update the driver")


def cudart_name(options: dict[str, Any]) -> str:
    cuda = options.get("cuda")
    name = cuda.get("cudart") if isinstance(cuda, dict) else None
    if not isinstance(name, str) or not name.startswith("libcudart.so."):
        raise IncompatibleBundleError("compiled.meta of this tvm-cuda bundle names no CUDA "
                                      "runtime library (backend_options.cuda.cudart)")
    return name
