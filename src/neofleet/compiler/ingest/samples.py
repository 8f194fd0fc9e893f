"""Representative inputs for verification, timing and calibration (``--sample-data``).

A sample file is an ``.npz`` of named arrays, one per model input, each with a leading
batch of samples: input ``input_ids`` declared ``1x128:int64`` with 16 samples is an array
of shape ``16x1x128`` and dtype int64. It is read with ``allow_pickle=False``; every array
must match its input's declared shape and dtype exactly, every input must be there, and
nothing else may be. Tree models also take a plain ``.npy`` of rows (their input is
``rows x features``; see ``ingest.trees``).

Without a sample file, inputs are generated (``generated_inputs``): floats standard
normal, booleans random, and integers from the value hints the loader found in the graph
(``ingest.int_values``), else small non-negative numbers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import SampleDataError

MAX_SAMPLES = 4096
VERIFY_AT_MOST = 32          # samples a candidate is verified on when a file gives more


@dataclass(frozen=True)
class ValueHint:
    """What values an integer input takes: ``low <= v < high``, or one of ``choices``.
    ``why`` says where it came from (for messages and ``compiled.meta``)."""

    why: str
    low: int = 0
    high: int = 8
    choices: tuple[int, ...] = ()

    def draw(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        if self.choices:
            return np.asarray(rng.choice(self.choices, size=tuple(shape)))
        return rng.integers(self.low, self.high, tuple(shape))

    def describe(self) -> str:
        values = (f"one of {list(self.choices)}" if self.choices
                  else f"in [{self.low}, {self.high})")
        return f"{values} ({self.why})"


def generated_inputs(specs: Sequence[TensorSpec], seed: int,
                     hints: Mapping[str, ValueHint] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal floats, random bools, integers per ``hints``."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            hint = (hints or {}).get(spec.name) or ValueHint("default")
            out[spec.name] = hint.draw(rng, spec.shape).astype(dtype)
    return out


def load_sample_file(path: Path, specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """The samples of an ``.npz`` file, one dict per sample; refuses anything that does not
    match ``specs`` with a message naming the input, what it expects and what it got."""
    arrays = _read_npz(path)
    names = {s.name for s in specs}
    missing = sorted(names - set(arrays))
    extra = sorted(set(arrays) - names)
    if missing or extra:
        parts = ([f"missing input(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown array(s) {', '.join(extra)}"] if extra else [])
        raise SampleDataError(f"--sample-data {path.name}: {'; '.join(parts)}; the model's "
                              f"inputs are {', '.join(_describe(s) for s in specs)}")
    counts = {s.name: _check_array(path, s, arrays[s.name]) for s in specs}
    if len(set(counts.values())) > 1:
        raise SampleDataError(f"--sample-data {path.name}: every input needs the same number "
                              f"of samples, got {counts}")
    count = next(iter(counts.values()))
    return [{s.name: np.array(arrays[s.name][i], copy=True) for s in specs}
            for i in range(count)]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if path.suffix != ".npz":
        raise SampleDataError(f"--sample-data {path.name}: expected an .npz of named arrays, "
                              "one per input, with a leading batch of samples")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SampleDataError(f"--sample-data {path.name}: not a readable .npz ({exc})") from exc


def _check_array(path: Path, spec: TensorSpec, array: np.ndarray) -> int:
    want = "x".join(str(d) for d in spec.shape) or "scalar"
    got = f"shape {list(array.shape)} {array.dtype}"
    dtype = "float32" if spec.dtype == "bfloat16" else spec.dtype
    if (array.ndim != len(spec.shape) + 1 or list(array.shape[1:]) != list(spec.shape)
            or str(array.dtype) != dtype or array.shape[0] == 0):
        raise SampleDataError(
            f"--sample-data {path.name}: input {spec.name} expects N samples of {want} "
            f"{dtype} (an array of shape [N, {', '.join(map(str, spec.shape))}]), got {got}"
            .replace("[N, ]", "[N]"))
    if array.shape[0] > MAX_SAMPLES:
        raise SampleDataError(f"--sample-data {path.name}: {array.shape[0]} samples of "
                              f"{spec.name}; at most {MAX_SAMPLES}")
    return int(array.shape[0])


def _describe(spec: TensorSpec) -> str:
    return f"{spec.name}:{'x'.join(str(d) for d in spec.shape) or 'scalar'}:{spec.dtype}"
