"""Run a TVM Relax VM executable with tvm-ffi and ``libtvm_runtime.so`` only.

The TVM compiler (``import tvm``) is never imported. The runtime library comes, in this
order, from the bundle itself (``runtime_library`` in the backend options: the compiler
copies the ``libtvm_runtime.so`` it built against into the bundle, so it is verified like
every other file and its version always matches), from ``$NEOFLEET_TVM_RUNTIME_LIB``, or
from an installed ``tvm`` package located without importing it. It is loaded once per
process with ctypes after ``tvm_ffi``; a later bundle that carries a different library is
refused (two TVM runtimes cannot share a process). The installed ``apache-tvm-ffi`` must
be the version the bundle was compiled with.

Concurrency: the loaded module is shared, each thread gets its own VM (a Relax VM holds
per-call state and is not thread-safe), so ``run`` from many threads runs in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.errors import BackendUnavailableError, IncompatibleBundleError

_DEVICE_CODES = {"cpu": 1, "gpu": 2}
_POOLED_ALLOCATOR = 2
# TVM's kernels assume their buffers are aligned to this (TIR's default data alignment):
# with AVX-512 an unaligned input is a segfault, not a slowdown.
ALIGNMENT = 64

_loaded_lock = threading.Lock()
_loaded: dict[str, str] = {}  # the one libtvm_runtime.so of this process: path, sha256


@dataclass(frozen=True)
class TvmRequirements:
    """What a TVM bundle needs from this process (read from its verified meta)."""

    runtime_library: Path | None
    runtime_sha256: str | None
    tvm_ffi_version: str | None


def load_runtime_library(requirements: TvmRequirements) -> Path:
    """Load libtvm_runtime.so once per process; refuse a second, different one."""
    tvm_ffi = _import_tvm_ffi(requirements.tvm_ffi_version)
    del tvm_ffi
    path = requirements.runtime_library or _find_installed_runtime_library()
    digest = requirements.runtime_sha256 or _sha256(path)
    with _loaded_lock:
        if not _loaded and (mapped := _mapped_runtime_library()) is not None:
            _loaded.update(path=str(mapped), sha256=_sha256(mapped))  # e.g. `import tvm`
        if not _loaded:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            _loaded.update(path=str(path), sha256=digest)
        elif _loaded["sha256"] != digest:
            raise IncompatibleBundleError(
                f"this process already runs libtvm_runtime.so {_loaded['sha256'][:12]} (from "
                f"{_loaded['path']}); the bundle needs {digest[:12]}: serve it from another "
                "process")
    return Path(_loaded["path"])


def _mapped_runtime_library(maps: Path = Path("/proc/self/maps")) -> Path | None:
    """A libtvm_runtime.so some other code (the TVM compiler) already loaded, if any."""
    try:
        text = maps.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.endswith("/libtvm_runtime.so"):
            return Path(line.split(maxsplit=5)[-1])
    return None


def _import_tvm_ffi(expected: str | None) -> Any:
    try:
        import tvm_ffi
    except ImportError as exc:
        raise BackendUnavailableError("the tvm backend needs apache-tvm-ffi: "
                                      "pip install 'neofleet[runtime]'") from exc
    installed = str(getattr(tvm_ffi, "__version__", "unknown"))
    if expected and installed != expected:
        raise IncompatibleBundleError(f"the bundle was compiled with apache-tvm-ffi {expected}; "
                                      f"this runtime has {installed}")
    return tvm_ffi


def _find_installed_runtime_library() -> Path:
    explicit = os.environ.get("NEOFLEET_TVM_RUNTIME_LIB")
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("tvm")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "lib" / "libtvm_runtime.so"
        if candidate.is_file():
            return candidate
    raise BackendUnavailableError("the bundle carries no libtvm_runtime.so and none was found: "
                                  "set NEOFLEET_TVM_RUNTIME_LIB or recompile the bundle")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TvmBackend:
    def __init__(self, artifact: Path, requirements: TvmRequirements, *, dev_type: str,
                 dev_id: int, num_threads: int | None) -> None:
        if num_threads:
            os.environ.setdefault("TVM_NUM_THREADS", str(num_threads))
        load_runtime_library(requirements)
        import tvm_ffi

        self._tvm_ffi = tvm_ffi
        self._module = tvm_ffi.load_module(str(artifact.resolve()))
        self._device = (_DEVICE_CODES[dev_type], dev_id)
        self._local = threading.local()
        self._main()  # load one VM now: a broken artifact fails at load, not first call

    def _main(self) -> Any:
        main = getattr(self._local, "main", None)
        if main is None:
            vm = self._module["vm_load_executable"]()
            code, dev_id = self._device
            vm["vm_initialization"](code, dev_id, _POOLED_ALLOCATOR, 1, 0, _POOLED_ALLOCATOR)
            self._local.vm, self._local.main = vm, vm["main"]
            main = self._local.main
        return main

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [self._tvm_ffi.from_dlpack(aligned(a)) for a in inputs]
        return [np.from_dlpack(t).copy() for t in flatten_outputs(self._main()(*tensors))]


def aligned(array: np.ndarray, alignment: int = ALIGNMENT) -> np.ndarray:
    """``array`` itself when C-contiguous and aligned, else an aligned copy."""
    if array.flags.c_contiguous and array.ctypes.data % alignment == 0:
        return array
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    offset = -raw.ctypes.data % alignment
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def flatten_outputs(value: Any) -> list[Any]:
    """The tensors of a Relax VM result (a tensor or nested tuples of them), in order."""
    if hasattr(value, "__dlpack__"):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(flatten_outputs(item))
    return out
