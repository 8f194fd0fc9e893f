"""Run a TensorRT engine (``compiled.plan``) on an NVIDIA GPU.

A TensorRT engine is bound to the GPU architecture (compute capability) it was built on and
to the TensorRT release that built it. The bundle records both (``backend_options``:
``trt_version``, ``compute_capability``, and the CUDA version, for information); this
backend loads the engine only where both match and otherwise refuses with a message that
names the bundle's side and this host's. Nothing is deserialized before that check. The
GPUs are those the CUDA driver reports (``neofleet.runtime.gpu``); the rule is stricter
than CUDA's binary compatibility for SASS: an engine needs the exact compute capability.

Inference uses TensorRT's named I/O tensor API (TensorRT >= 8.5, the only API in 10.x):
``set_input_shape`` / ``set_tensor_address`` per tensor, then ``execute_async_v3`` on a
CUDA stream. Device buffers, copies and streams come from **cuda-python**
(``cuda.bindings.runtime``, NVIDIA's official CUDA bindings; ``pip install
'neofleet[tensorrt]'``), not torch: runtime images stay free of torch. Each thread gets
its own execution context, stream and device buffers (an ``IExecutionContext`` is not
thread-safe; the engine is shared), so ``run`` from many threads runs in parallel.

``tensorrt`` and ``cuda`` are imported lazily, never at module import.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle import Bundle
from neofleet.runtime.errors import (
    BackendUnavailableError,
    IncompatibleBundleError,
    InputError,
    RuntimeModelError,
)
from neofleet.runtime.gpu import GpuInfo, HostGpus, detect_gpus

log = logging.getLogger("neofleet.runtime.tensorrt")

INSTALL_HINT = ("install TensorRT from NVIDIA's index (pip install --extra-index-url "
                "https://pypi.nvidia.com tensorrt-cu12==<the bundle's version>) and "
                "pip install 'neofleet[tensorrt]'")


# --------------------------------------------------------------------------- versions


def sm(compute_capability: str) -> str:
    """``"7.5"`` → ``"sm_75"``."""
    return "sm_" + compute_capability.replace(".", "")


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numeric components of a version (``"10.14.1.48.post1"`` → 10,14,1,48)."""
    parts: list[int] = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def same_trt_release(built_with: str, installed: str) -> bool:
    """Engines load only on the TensorRT release that built them: major, minor and patch
    must be equal, and the build number too where both versions carry one."""
    a, b = version_tuple(built_with), version_tuple(installed)
    if len(a) < 3 or len(b) < 3:
        return False
    n = min(len(a), len(b), 4)
    return a[:n] == b[:n]


def version_prefix_matches(required: str, actual: str) -> bool:
    """``required`` names a release line (``"10.0"``, ``"10"``, ``"10.0.1.6"``);
    ``actual`` is inside it when it starts with the same numeric components."""
    want, have = version_tuple(required), version_tuple(actual)
    return bool(want) and have[:len(want)] == want


# --------------------------------------------------------------------------- host facts


@dataclass(frozen=True)
class HostFacts:
    """What this host offers a TensorRT engine: the TensorRT it imports (or why not), the
    GPUs the CUDA driver reports (``neofleet.runtime.gpu``), the CUDA runtime version."""

    trt_version: str | None
    trt_error: str
    gpus: HostGpus
    cuda_runtime: str | None = None

    @property
    def cuda_driver(self) -> str | None:
        return self.gpus.driver_cuda_version

    def gpu(self, index: int) -> GpuInfo | None:
        return next((g for g in self.gpus.gpus if g.index == index), None)

    def describe_trt(self) -> str:
        if self.trt_version is None:
            return f"no TensorRT ({self.trt_error})"
        return f"TensorRT {self.trt_version}"

    def describe_gpu(self, index: int) -> str:
        gpu = self.gpu(index)
        if gpu is not None:
            return describe_gpu(gpu)
        if self.gpus.gpus:
            return f"no GPU {index} ({self.gpus.describe()})"
        return self.gpus.describe()


def describe_gpu(gpu: GpuInfo) -> str:
    return f"GPU {gpu.index} {gpu.name} ({sm(gpu.cc)})"


def import_tensorrt() -> tuple[Any, str]:
    """The ``tensorrt`` module, or ``(None, why)``. Its wheel can be present and still fail
    to import (a missing ``libnvonnxparser``), so every exception counts."""
    try:
        return importlib.import_module("tensorrt"), ""
    except Exception as exc:  # ImportError, OSError from a missing shared library, ...
        return None, f"{type(exc).__name__}: {exc}".strip()


def import_cudart() -> tuple[Any, str]:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (cuda-python >= 12.6), else
    the older ``cuda.cudart``."""
    why = ""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name), ""
        except Exception as exc:
            why = why or f"{type(exc).__name__}: {exc}"
    return None, f"cuda-python is not installed ({why})"


def host_facts() -> HostFacts:
    """Probe this host: the TensorRT it can import, its GPUs and CUDA versions."""
    trt, trt_error = import_tensorrt()
    trt_version = str(trt.__version__) if trt is not None else None
    cudart, _ = import_cudart()
    runtime = None
    if cudart is not None:
        try:
            runtime = _cuda_version(cuda_call(cudart, cudart.cudaRuntimeGetVersion()))
        except RuntimeModelError:
            runtime = None
    return HostFacts(trt_version, trt_error, detect_gpus(), runtime)


def _cuda_version(value: int) -> str:
    """CUDA's integer versions: 12020 → "12.2"."""
    return f"{int(value) // 1000}.{(int(value) % 1000) // 10}"


def _ok(err: Any) -> bool:
    return int(getattr(err, "value", err)) == 0


def _error_name(cudart: Any, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(err)


def cuda_call(cudart: Any, result: Any) -> Any:
    """cuda-python returns ``(error, *values)``: raise on an error, else the value(s)."""
    err, values = result[0], result[1:]
    if not _ok(err):
        raise RuntimeModelError(f"CUDA error {_error_name(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class EngineRequirements:
    """What a TensorRT bundle needs from the host (read from its verified meta)."""

    target: str
    trt_version: str
    compute_capability: str
    cuda_version: str | None = None

    def describe(self) -> str:
        cuda = f", CUDA {self.cuda_version}" if self.cuda_version else ""
        return (f"TensorRT {self.trt_version} on a {sm(self.compute_capability)} GPU "
                f"(compute capability {self.compute_capability}{cuda})")


def engine_requirements(bundle: Bundle) -> EngineRequirements:
    section = bundle.meta.neofleet
    options = section.backend_options
    trt_version = options.get("trt_version") or section.compiler.get("tensorrt")
    capability = options.get("compute_capability")
    if not isinstance(trt_version, str) or not isinstance(capability, str):
        raise IncompatibleBundleError(
            "this tensorrt bundle does not record the TensorRT version and GPU compute "
            "capability its engine is bound to (backend_options.trt_version, "
            "backend_options.compute_capability); rebuild it")
    cuda = options.get("cuda_version") or section.compiler.get("cuda")
    return EngineRequirements(target=bundle.meta.requirements.target_device,
                              trt_version=trt_version, compute_capability=capability,
                              cuda_version=str(cuda) if cuda else None)


def check_host(required: EngineRequirements, host: HostFacts, dev_id: int = 0) -> None:
    """Refuse an engine this host cannot load (pure).

    ``IncompatibleBundleError`` when the GPU is missing or of another architecture, or the
    installed TensorRT is another release; ``BackendUnavailableError`` when only TensorRT
    is missing. Either message names the bundle's side and this host's.
    """
    gpu = host.gpu(dev_id)
    wrong_gpu = gpu is None or gpu.cc != required.compute_capability
    wrong_trt = host.trt_version is not None and not same_trt_release(
        required.trt_version, host.trt_version)
    if not (wrong_gpu or wrong_trt or host.trt_version is None):
        return
    message = (f"the {required.target} bundle's engine was built with {required.describe()}; "
               f"this host has {host.describe_trt()} and {host.describe_gpu(dev_id)}")
    if wrong_gpu:
        raise IncompatibleBundleError(message + ": TensorRT engines only run on the GPU "
                                      "architecture they were built for; deploy it to a "
                                      f"{sm(required.compute_capability)} node or rebuild it "
                                      "on this one")
    if wrong_trt:
        raise IncompatibleBundleError(message + ": TensorRT engines only load on the TensorRT "
                                      "release that built them; install that release or "
                                      "rebuild the bundle")
    raise BackendUnavailableError(message + f": {INSTALL_HINT}")


def check_engine_bundle(bundle: Bundle, dev_type: str, dev_id: int,
                        host: HostFacts | None = None) -> None:
    """``DLRModel``'s compatibility check for tensorrt bundles (stricter than the CUDA
    binary rule of ``neofleet.runtime.gpu``: an engine needs the exact compute capability
    and the same TensorRT release)."""
    required = engine_requirements(bundle)
    host = host_facts() if host is None else host
    if dev_type != "gpu":
        raise IncompatibleBundleError(
            f"the {required.target} bundle's engine needs {required.describe()}; it runs only "
            f"with dev_type='gpu', not {dev_type!r} (no CPU fallback; this host has "
            f"{host.describe_trt()} and {host.describe_gpu(dev_id)})")
    check_host(required, host, dev_id)


# --------------------------------------------------------------------------- logging


def make_logger(trt: Any, sink: Callable[[str], None] | None = None) -> Any:
    """A ``trt.ILogger`` that keeps errors (for exception messages) and sends warnings and
    errors to ``sink`` (default: the ``neofleet.runtime.tensorrt`` logger), never to
    stdout, which carries the compiler's JSON and the probe's report."""

    class _Logger(trt.ILogger):  # type: ignore[misc]  # tensorrt is untyped
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.ERROR):
                self.errors.append(str(msg))
            if level <= int(trt.ILogger.WARNING):
                (sink or log.warning)(f"TensorRT: {msg}")

    return _Logger()


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: np.dtype[Any]


class TensorRtBackend:
    """A deserialized engine; ``run`` takes and returns host numpy arrays."""

    def __init__(self, artifact: Path, required: EngineRequirements, *, dev_type: str,
                 dev_id: int, input_names: Sequence[str], output_names: Sequence[str],
                 output_dtypes: Sequence[str]) -> None:
        if dev_type != "gpu":
            raise IncompatibleBundleError(f"TensorRT engines run on dev_type='gpu', not "
                                          f"{dev_type!r}")
        if len(output_names) != len(output_dtypes):
            raise IncompatibleBundleError(f"the bundle maps {len(output_names)} engine outputs "
                                          f"to {len(output_dtypes)} model outputs")
        check_host(required, host_facts(), dev_id)
        trt, _ = import_tensorrt()
        cudart, why = import_cudart()
        if cudart is None:
            raise BackendUnavailableError(f"the tensorrt backend needs cuda-python for device "
                                          f"buffers: pip install 'neofleet[tensorrt]' ({why})")
        self._trt, self._cudart, self._dev_id = trt, cudart, dev_id
        cuda_call(cudart, cudart.cudaSetDevice(dev_id))
        self._logger = make_logger(trt)
        trt.init_libnvinfer_plugins(self._logger, "")  # engines may use TensorRT's plugins
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(artifact.read_bytes())
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no detail"
            raise IncompatibleBundleError(f"TensorRT {trt.__version__} could not deserialize "
                                          f"the engine: {detail}")
        self._inputs, self._outputs = self._io(input_names, output_names)
        self._output_dtypes = [np.dtype(d) for d in output_dtypes]
        self._local = threading.local()

    def _io(self, input_names: Sequence[str],
            output_names: Sequence[str]) -> tuple[list[_Tensor], list[_Tensor]]:
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) for n in names}
        have_in = {n for n in names if modes[n] == trt.TensorIOMode.INPUT}
        have_out = {n for n in names if modes[n] == trt.TensorIOMode.OUTPUT}
        if have_in != set(input_names) or not set(output_names) <= have_out \
                or len(set(output_names)) != len(output_names):
            raise IncompatibleBundleError(
                f"the engine's tensors (inputs {sorted(have_in)}, outputs {sorted(have_out)}) "
                f"do not match compiled.meta (inputs {list(input_names)}, outputs "
                f"{list(output_names)})")

        def tensor(name: str) -> _Tensor:
            dtype = engine.get_tensor_dtype(name)
            try:
                return _Tensor(name, np.dtype(trt.nptype(dtype)))
            except TypeError:
                raise IncompatibleBundleError(f"the engine's tensor {name} is {dtype}, which "
                                              "numpy cannot hold") from None

        return [tensor(n) for n in input_names], [tensor(n) for n in output_names]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _Slot(self._engine, self._cudart, self._dev_id)
        outputs = slot.run(self._inputs, self._outputs, inputs)
        return [o if o.dtype == d else o.astype(d)
                for o, d in zip(outputs, self._output_dtypes, strict=True)]


class _Slot:
    """One thread's execution context, CUDA stream and device buffers (grown on demand)."""

    def __init__(self, engine: Any, cudart: Any, dev_id: int) -> None:
        self._cudart = cudart
        cuda_call(cudart, cudart.cudaSetDevice(dev_id))
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RuntimeModelError("TensorRT could not create an execution context (GPU "
                                    "memory?)")
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes or ptr == 0:
            if ptr:
                cuda_call(self._cudart, self._cudart.cudaFree(ptr))
            size = max(nbytes, 256)
            ptr = int(cuda_call(self._cudart, self._cudart.cudaMalloc(size)))
            self._buffers[name] = (ptr, size)
        return ptr

    def run(self, inputs: list[_Tensor], outputs: list[_Tensor],
            arrays: list[np.ndarray]) -> list[np.ndarray]:
        cudart, context, stream = self._cudart, self._context, self._stream
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # keep host arrays alive until the stream is synchronized
        for tensor, value in zip(inputs, arrays, strict=True):
            array = np.ascontiguousarray(value, dtype=tensor.dtype)
            if not context.set_input_shape(tensor.name, array.shape):
                raise InputError(f"input {tensor.name}: shape {list(array.shape)} is outside "
                                 "the engine's optimization profile")
            ptr = self._buffer(tensor.name, array.nbytes)
            cuda_call(cudart, cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                                     to_device, stream))
            context.set_tensor_address(tensor.name, ptr)
            staged.append(array)
        results = []
        for tensor in outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in shape):
                raise RuntimeModelError(f"TensorRT left output {tensor.name} with an "
                                        f"unresolved shape {list(shape)}")
            host = np.empty(shape, dtype=tensor.dtype)
            context.set_tensor_address(tensor.name, self._buffer(tensor.name, host.nbytes))
            results.append(host)
        if not context.execute_async_v3(int(stream)):
            raise RuntimeModelError("TensorRT's execute_async_v3 failed")
        for tensor, host in zip(outputs, results, strict=True):
            ptr, _ = self._buffers[tensor.name]
            cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                                     to_host, stream))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream))
        del staged
        return results

    def __del__(self) -> None:  # best effort: the process may be exiting
        try:
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._cudart.cudaStreamDestroy(self._stream)
        except Exception:
            log.debug("freeing TensorRT buffers failed", exc_info=True)
