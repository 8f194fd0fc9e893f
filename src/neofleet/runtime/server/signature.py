"""The model's tensors as the Open Inference Protocol names them.

``DATATYPES`` maps OIP datatypes to little-endian numpy dtypes (BOOL, UINT8..UINT64,
INT8..INT64, FP16, FP32, FP64; BYTES has no fixed-size numpy form and is not served).
A ``Signature`` is the model's inputs and outputs as ``TensorMeta``; with ``max_batch``
(dynamic batching) inputs take 1..max_batch rows in dim 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neofleet.runtime.errors import InputError, ServerConfigError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The OIP datatype of a numpy dtype; ServerConfigError when OIP has none."""
    try:
        return _DATATYPE_OF[np.dtype(dtype).newbyteorder("<")]
    except (KeyError, TypeError) as exc:
        raise ServerConfigError(f"dtype {dtype} has no Open Inference Protocol datatype "
                                f"(supported: {', '.join(DATATYPES)})") from exc


@dataclass(frozen=True)
class TensorMeta:
    """One model input or output as the protocol describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return DATATYPES[self.datatype]

    def describe(self, max_batch: int | None = None) -> str:
        dims = ["any" if d == -1 else str(d) for d in self.shape]
        if max_batch is not None and dims:
            dims[0] = f"1..{max_batch}"
        return f"{self.name} ({self.datatype} [{', '.join(dims)}])"


@dataclass(frozen=True)
class Signature:
    """The model's inputs and outputs; with ``max_batch`` inputs take 1..max_batch rows."""

    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    max_batch: int | None = None

    def input_index(self, name: str) -> int:
        for index, meta in enumerate(self.inputs):
            if meta.name == name:
                return index
        raise InputError(f"unknown input {name!r}; the model takes {self.describe_inputs()}")

    def output_index(self, name: str) -> int:
        for index, meta in enumerate(self.outputs):
            if meta.name == name:
                return index
        names = ", ".join(o.name for o in self.outputs)
        raise InputError(f"unknown output {name!r}; the model gives {names}")

    def describe_inputs(self) -> str:
        return ", ".join(m.describe(self.max_batch) for m in self.inputs)


def signature_of(inputs: Sequence[tuple[str, str, Sequence[int]]],
                 outputs: Sequence[tuple[str, str, Sequence[int]]],
                 max_batch: int | None = None) -> Signature:
    """A Signature from (name, numpy dtype, shape) triples, e.g. a bundle's meta."""
    def metas(specs: Sequence[tuple[str, str, Sequence[int]]]) -> tuple[TensorMeta, ...]:
        return tuple(TensorMeta(n, datatype_of(d), tuple(int(x) for x in s)) for n, d, s in specs)

    return Signature(metas(inputs), metas(outputs), max_batch)
