"""``DLRModel``: the DLR API over a verified neofleet bundle."""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle import Bundle
from neofleet.bundle.layout import snapshot_bundle
from neofleet.runtime.backends import ModelBackend, load_backend
from neofleet.runtime.errors import IncompatibleBundleError, InputError

_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

InputValue = Mapping[str, Any] | Sequence[Any] | np.ndarray


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


class DLRModel:
    """Load ``model_path`` (a bundle directory) for ``dev_type`` ("cpu" or "gpu").

    The bundle is copied into a private folder, every file's digest is checked on that
    copy, and the backend loads from it (then the copy is deleted): nothing can change a
    file between the check and the load. ``run`` is safe to
    call from many threads at once and runs them in parallel (ONNX Runtime sessions are
    thread-safe; the TVM backend gives each thread its own VM).

    Tree bundles take any number of rows (their input shape is ``[-1, features]``) and
    choose between two compiled paths per call by the number of rows; ``variant``
    ("rows" or "forest") forces one, as the compiler's verification does.
    """

    def __init__(
        self,
        model_path: str | Path,
        dev_type: str = "cpu",
        dev_id: int = 0,
        *,
        num_threads: int | None = None,
        variant: str | None = None,
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="neofleet-load-") as private:
            loaded = snapshot_bundle(model_path, Path(private) / "bundle")
            _check_compatible(loaded, dev_type, dev_id)
            self._backend: ModelBackend = load_backend(
                loaded, dev_type=dev_type, dev_id=dev_id, num_threads=num_threads,
                variant=variant)
        # the private copy is gone; mapped libraries and loaded sessions stay
        self._bundle = Bundle(path=Path(model_path), manifest=loaded.manifest, meta=loaded.meta)
        self._inputs = list(self._bundle.meta.model.inputs)
        self._outputs = list(self._bundle.meta.model.outputs)
        self._expected = [_Expected(s.name, np.dtype(s.dtype), tuple(s.shape))
                          for s in self._inputs]

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def run(self, input_values: InputValue) -> list[np.ndarray]:
        return self._backend.run(self._arrays_in_order(input_values))

    def get_input_names(self) -> list[str]:
        return [t.name for t in self._inputs]

    def get_input_dtypes(self) -> list[str]:
        return [t.dtype for t in self._inputs]

    def get_input_shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self._inputs]

    def get_output_names(self) -> list[str]:
        return [t.name for t in self._outputs]

    def get_output_dtypes(self) -> list[str]:
        return [t.dtype for t in self._outputs]

    def get_output_shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self._outputs]

    def get_version(self) -> str:
        from neofleet import __version__

        return __version__

    def has_metadata(self) -> bool:
        return True

    def get_metadata(self) -> dict[str, Any]:
        return self._bundle.meta.model_dump(by_alias=True, mode="json")

    def _arrays_in_order(self, values: InputValue) -> list[np.ndarray]:
        expected = self._expected
        if isinstance(values, np.ndarray):
            values = [values]
        if isinstance(values, Mapping):
            if len(values) != len(expected) or any(e.name not in values for e in expected):
                names = [e.name for e in expected]
                unknown = sorted(set(values) - set(names))
                missing = [n for n in names if n not in values]
                raise InputError(f"inputs must be exactly {sorted(names)}; "
                                 f"unknown {unknown}, missing {missing}")
            ordered = [values[e.name] for e in expected]
        else:
            ordered = list(values)
            if len(ordered) != len(expected):
                raise InputError(f"model takes {len(expected)} inputs, got {len(ordered)}")
        return [e.coerce(value) for e, value in zip(expected, ordered, strict=True)]


@dataclass(frozen=True)
class _Expected:
    """One input as the bundle declares it, ready for a cheap per-call check."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    def coerce(self, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != self.dtype:
            if array.dtype.kind == "O" or not np.can_cast(array.dtype, self.dtype,
                                                           casting="same_kind"):
                raise InputError(f"input {self.name}: dtype {array.dtype} given, model expects "
                                 f"{self.dtype}")
            array = array.astype(self.dtype)
        if array.shape != self.shape and not _matches(array.shape, self.shape):
            raise InputError(f"input {self.name}: shape {list(array.shape)} given, model "
                             f"expects {_describe(self.shape)}")
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _matches(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """``expected`` may hold -1 for a dimension of any size (a tree model's rows)."""
    return len(shape) == len(expected) and all(
        e in (-1, s) for s, e in zip(shape, expected, strict=True))


def _describe(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"


def check_compatible(bundle: Bundle, dev_type: str, dev_id: int = 0) -> None:
    """Refuse, with a clear message, a bundle this host cannot run on ``dev_type``."""
    _check_compatible(bundle, dev_type, dev_id)


def _check_compatible(bundle: Bundle, dev_type: str, dev_id: int = 0) -> None:
    req = bundle.meta.requirements
    if dev_type not in {"cpu", "gpu"}:
        raise IncompatibleBundleError(f"dev_type must be 'cpu' or 'gpu', not {dev_type!r}")
    if req.target_device_type == "gpu":
        if req.target_arch != host_arch():
            raise IncompatibleBundleError(
                f"bundle was built for target {req.target_device} ({req.target_arch} host with "
                f"a GPU); this host is {host_arch()}")
        if bundle.manifest.backend == "tensorrt":  # exact GPU arch and TensorRT release
            from neofleet.runtime.backends.tensorrt import check_engine_bundle

            check_engine_bundle(bundle, dev_type, dev_id)
            return
        from neofleet.runtime.gpu import check_gpu_bundle

        check_gpu_bundle(bundle.meta, dev_type, dev_id)
        return
    if req.target_device_type != dev_type:
        raise IncompatibleBundleError(
            f"bundle was built for target {req.target_device} ({req.target_device_type}); "
            f"cannot run it on dev_type={dev_type!r}")
    if req.target_arch != host_arch():
        raise IncompatibleBundleError(
            f"bundle was built for target {req.target_device} ({req.target_arch}); "
            f"this host is {host_arch()}")
