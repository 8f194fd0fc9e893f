"""``SourceModel``: what every backend builds from and every candidate is verified against."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import TensorSpec

Reference = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass
class SourceModel:
    """A loaded, checked model with static input shapes.

    ``onnx_path`` is a static-shaped ONNX file (inputs fixed to the declared shapes and
    constant-folded by ONNX Runtime) when the model is, or could be converted to, ONNX.
    ``exported_program`` is set for PyTorch models, ``tree_model`` (a Treelite model) and
    ``tree`` (its description for ``compiled.meta``) for tree ensembles. ``reference``
    computes the outputs candidates must match; ``sampler`` (when set) makes the seeded
    verification inputs instead of ``sample_inputs``. ``ops`` counts the source graph's
    operators.
    """

    framework: str
    path: Path
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    reference: Reference
    reference_name: str
    onnx_path: Path | None = None
    exported_program: Any = None
    ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sampler: Callable[[int], dict[str, np.ndarray]] | None = None
    tree_model: Any = None
    tree: dict[str, Any] | None = None
    sample_data: np.ndarray | None = None
    source_library: dict[str, str] = field(default_factory=dict)

    def sample_inputs(self, seed: int) -> dict[str, np.ndarray]:
        if self.sampler is not None:
            return self.sampler(seed)
        return sample_inputs(self.inputs, seed)


def sample_inputs(specs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            out[spec.name] = rng.integers(0, 8, spec.shape).astype(dtype)
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_specs(names: list[str], arrays: list[np.ndarray]) -> list[TensorSpec]:
    return [TensorSpec(name=n, shape=list(a.shape), dtype=str(a.dtype))
            for n, a in zip(names, arrays, strict=True)]
