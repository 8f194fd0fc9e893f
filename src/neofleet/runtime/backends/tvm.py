"""Run a TVM Relax VM executable with tvm-ffi and ``libtvm_runtime.so`` only.

The TVM compiler (``import tvm``) is never imported: the runtime library is found either
at ``$NEOFLEET_TVM_RUNTIME_LIB`` or inside the installed ``tvm`` package, located without
importing it, and loaded with ctypes after ``tvm_ffi``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.errors import BackendUnavailableError

_DEVICE_CODES = {"cpu": 1, "gpu": 2}
# TVM's kernels assume their buffers are aligned to this (TIR's default data alignment):
# with AVX-512 an unaligned input is a segfault, not a slowdown.
ALIGNMENT = 64
_POOLED_ALLOCATOR = 2


@functools.cache
def _load_runtime_library() -> Path:
    """Load libtvm_runtime.so once per process (a process-wide native library)."""
    try:
        import tvm_ffi  # noqa: F401  (loads libtvm_ffi.so, which the runtime links to)
    except ImportError as exc:
        raise BackendUnavailableError("the tvm backend needs apache-tvm-ffi: "
                                      "pip install 'neofleet[runtime]'") from exc
    path = _find_runtime_library()
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return path


def _find_runtime_library() -> Path:
    explicit = os.environ.get("NEOFLEET_TVM_RUNTIME_LIB")
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("tvm")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "lib" / "libtvm_runtime.so"
            if candidate.is_file():
                return candidate
    raise BackendUnavailableError(
        "libtvm_runtime.so not found: set NEOFLEET_TVM_RUNTIME_LIB or install apache-tvm")


class TvmBackend:
    def __init__(self, artifact: Path, *, dev_type: str, dev_id: int,
                 num_threads: int | None) -> None:
        if num_threads:
            os.environ.setdefault("TVM_NUM_THREADS", str(num_threads))
        _load_runtime_library()
        import tvm_ffi

        self._tvm_ffi = tvm_ffi
        module = tvm_ffi.load_module(str(artifact.resolve()))
        self._vm = module["vm_load_executable"]()
        code = _DEVICE_CODES[dev_type]
        self._vm["vm_initialization"](code, dev_id, _POOLED_ALLOCATOR, 1, 0, _POOLED_ALLOCATOR)
        self._main = self._vm["main"]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [self._tvm_ffi.from_dlpack(aligned(a)) for a in inputs]
        return [np.from_dlpack(t).copy() for t in _flatten(self._main(*tensors))]


def aligned(array: np.ndarray, alignment: int = ALIGNMENT) -> np.ndarray:
    """``array`` itself when C-contiguous and aligned, else an aligned copy."""
    if array.flags.c_contiguous and array.ctypes.data % alignment == 0:
        return array
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    offset = -raw.ctypes.data % alignment
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _flatten(value: Any) -> list[Any]:
    if hasattr(value, "__dlpack__"):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item))
    return out
