"""Compile backends, one module each behind ``base.Backend``.

``tvm``: Relax → LLVM (native or cross for aarch64), optional MetaSchedule tuning with
a kept database. ``onnxruntime``: an offline-optimized ONNX model plus session options.
``tl2cgen``: tree ensembles as generated C plus the forest kernel, one native library.
``tensorrt``: a TensorRT engine, built on a GPU of the target's kind.
``tvm-cuda``: Relax → DLight GPU schedules → CUDA kernels (nvcc) in one library; no GPU
needed to build. ``openvino``: OpenVINO IR for its CPU plugin, fp32 (x86_64).
"""

from __future__ import annotations

from neofleet.compiler.backends.base import Artifact, Backend, BuildOptions
from neofleet.compiler.errors import BackendUnavailableError

BACKEND_NAMES = ("onnxruntime", "openvino", "tvm", "tl2cgen", "tensorrt", "tvm-cuda")

__all__ = ["BACKEND_NAMES", "Artifact", "Backend", "BuildOptions", "make_backend",
           "preflight"]


def make_backend(name: str) -> Backend:
    if name == "tvm":
        from neofleet.compiler.backends.tvm import TvmBackend

        return TvmBackend()
    if name == "onnxruntime":
        from neofleet.compiler.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "openvino":
        from neofleet.compiler.backends.openvino import OpenVinoBackend

        return OpenVinoBackend()
    if name == "tl2cgen":
        from neofleet.compiler.backends.tl2cgen import Tl2cgenBackend

        return Tl2cgenBackend()
    if name == "tensorrt":
        from neofleet.compiler.backends.tensorrt import TensorRtBackend

        return TensorRtBackend()
    if name == "tvm-cuda":
        from neofleet.compiler.backends.tvm_cuda import TvmCudaBackend

        return TvmCudaBackend()
    raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")


def preflight(name: str) -> None:
    """Checks an explicitly requested backend can pass before anything is loaded: a
    missing library fails the compile at once (``auto`` never calls this)."""
    if name == "tensorrt":
        from neofleet.compiler.backends.tensorrt import require_tensorrt

        require_tensorrt()
