"""``DLRModel``: the DLR API over a verified neofleet bundle."""

from __future__ import annotations

import platform
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle import Bundle, TensorSpec, open_bundle
from neofleet.runtime.backends import ModelBackend, load_backend
from neofleet.runtime.errors import IncompatibleBundleError, InputError

_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

InputValue = Mapping[str, Any] | Sequence[Any] | np.ndarray


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


class DLRModel:
    """Load ``model_path`` (a bundle directory) for ``dev_type`` ("cpu" or "gpu").

    Every file's digest is checked before the backend loads anything. ``run`` is safe to
    call from several threads.
    """

    def __init__(
        self,
        model_path: str | Path,
        dev_type: str = "cpu",
        dev_id: int = 0,
        *,
        num_threads: int | None = None,
    ) -> None:
        self._bundle: Bundle = open_bundle(model_path)
        _check_compatible(self._bundle, dev_type)
        self._inputs = list(self._bundle.meta.model.inputs)
        self._outputs = list(self._bundle.meta.model.outputs)
        self._backend: ModelBackend = load_backend(
            self._bundle, dev_type=dev_type, dev_id=dev_id, num_threads=num_threads
        )
        self._lock = threading.Lock()

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def run(self, input_values: InputValue) -> list[np.ndarray]:
        arrays = self._arrays_in_order(input_values)
        with self._lock:
            return self._backend.run(arrays)

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
        specs = self._inputs
        if isinstance(values, np.ndarray):
            values = [values]
        if isinstance(values, Mapping):
            names = {s.name for s in specs}
            unknown = sorted(set(values) - names)
            missing = [s.name for s in specs if s.name not in values]
            if unknown or missing:
                raise InputError(f"inputs must be exactly {sorted(names)}; "
                                 f"unknown {unknown}, missing {missing}")
            ordered = [values[s.name] for s in specs]
        else:
            ordered = list(values)
            if len(ordered) != len(specs):
                raise InputError(f"model takes {len(specs)} inputs, got {len(ordered)}")
        return [_coerce(spec, value) for spec, value in zip(specs, ordered, strict=True)]


def _coerce(spec: TensorSpec, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.dtype(spec.dtype):
        if not np.can_cast(array.dtype, spec.dtype, casting="same_kind") or array.dtype.kind == "O":
            raise InputError(f"input {spec.name}: dtype {array.dtype} given, model expects "
                             f"{spec.dtype}")
        array = array.astype(spec.dtype)
    if list(array.shape) != list(spec.shape):
        raise InputError(f"input {spec.name}: shape {list(array.shape)} given, model expects "
                         f"{list(spec.shape)}")
    return np.ascontiguousarray(array)


def _check_compatible(bundle: Bundle, dev_type: str) -> None:
    req = bundle.meta.requirements
    if dev_type not in {"cpu", "gpu"}:
        raise IncompatibleBundleError(f"dev_type must be 'cpu' or 'gpu', not {dev_type!r}")
    if req.target_device_type != dev_type:
        raise IncompatibleBundleError(
            f"bundle was built for target {req.target_device} ({req.target_device_type}); "
            f"cannot run it on dev_type={dev_type!r}")
    if req.target_arch != host_arch():
        raise IncompatibleBundleError(
            f"bundle was built for target {req.target_device} ({req.target_arch}); "
            f"this host is {host_arch()}")
