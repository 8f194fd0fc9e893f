"""Compile backends, one module each behind ``base.Backend``.

``tvm``: Relax → LLVM (native or cross for aarch64), optional MetaSchedule tuning with
a kept database. ``onnxruntime``: an offline-optimized ONNX model plus session options.
``tl2cgen``: tree ensembles as generated C plus the forest kernel, one native library.
"""

from __future__ import annotations

from neofleet.compiler.backends.base import Artifact, Backend, BuildOptions
from neofleet.compiler.errors import BackendUnavailableError

BACKEND_NAMES = ("onnxruntime", "tvm", "tl2cgen")

__all__ = ["BACKEND_NAMES", "Artifact", "Backend", "BuildOptions", "make_backend"]


def make_backend(name: str) -> Backend:
    if name == "tvm":
        from neofleet.compiler.backends.tvm import TvmBackend

        return TvmBackend()
    if name == "onnxruntime":
        from neofleet.compiler.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tl2cgen":
        from neofleet.compiler.backends.tl2cgen import Tl2cgenBackend

        return Tl2cgenBackend()
    raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
