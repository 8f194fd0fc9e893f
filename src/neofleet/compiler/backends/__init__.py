"""Compile backends, one module each behind ``base.Backend``.

``tvm``: Relax → LLVM (native or cross for aarch64), optional MetaSchedule tuning with
a kept database. ``onnxruntime``: an offline-optimized ONNX model plus session options.
"""

from __future__ import annotations

from neofleet.compiler.backends.base import Artifact, Backend, BuildOptions
from neofleet.compiler.errors import BackendUnavailableError

BACKEND_NAMES = ("onnxruntime", "tvm")

__all__ = ["BACKEND_NAMES", "Artifact", "Backend", "BuildOptions", "make_backend"]


def make_backend(name: str) -> Backend:
    if name == "tvm":
        from neofleet.compiler.backends.tvm import TvmBackend

        return TvmBackend()
    if name == "onnxruntime":
        from neofleet.compiler.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
