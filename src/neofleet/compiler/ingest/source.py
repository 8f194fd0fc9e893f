"""``SourceModel``: what every backend builds from and every candidate is verified against."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import ModelRunError
from neofleet.compiler.ingest.samples import VERIFY_AT_MOST, ValueHint, generated_inputs

Reference = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass
class SourceModel:
    """A loaded, checked model with static input shapes.

    ``onnx_path`` is a static-shaped ONNX file (inputs fixed to the declared shapes and
    constant-folded by ONNX Runtime) when the model is, or could be converted to, ONNX.
    ``exported_program`` is set for PyTorch models, ``tree_model`` (a Treelite model) and
    ``tree`` (its description for ``compiled.meta``) for tree ensembles. ``reference``
    computes the outputs candidates must match. Verification and timing inputs come from
    ``samples`` (the user's ``--sample-data``) when given, else from ``sampler`` (tree
    models: rows over the thresholds' ranges), else are generated with ``value_hints`` for
    integer inputs. ``ops`` counts the source graph's operators. ``graph`` says which ONNX
    graph ``onnx_path`` is: ``prepared`` (static dims, folded: what TVM needs) or
    ``original`` (the preparation broke the model; ``notes`` say how).
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
    samples: list[dict[str, np.ndarray]] | None = None
    value_hints: dict[str, ValueHint] = field(default_factory=dict)
    graph: str = "prepared"

    def sample_inputs(self, seed: int) -> dict[str, np.ndarray]:
        if self.samples:
            return self.samples[seed % len(self.samples)]
        if self.sampler is not None:
            return self.sampler(seed)
        return generated_inputs(self.inputs, seed, self.value_hints)

    def verification_count(self, requested: int) -> int:
        """How many samples a candidate is verified on: every given sample (up to
        ``VERIFY_AT_MOST``), else ``requested`` generated ones."""
        return min(len(self.samples), VERIFY_AT_MOST) if self.samples else requested

    def describe_inputs(self) -> str:
        """Where the verification inputs come from, for error messages."""
        if self.samples:
            return f"the {len(self.samples)} samples of --sample-data"
        if self.sampler is not None:
            return "rows generated over the model's own value ranges"
        hinted = [f"{name} {hint.describe()}" for name, hint in self.value_hints.items()]
        return "generated inputs" + (f" ({'; '.join(hinted)})" if hinted else "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_specs(names: list[str], arrays: list[np.ndarray]) -> list[TensorSpec]:
    return [TensorSpec(name=n, shape=list(a.shape), dtype=str(a.dtype))
            for n, a in zip(names, arrays, strict=True)]


def run_reference(source: SourceModel, seed: int) -> list[np.ndarray]:
    """The reference's outputs on sample ``seed``; a model that fails on it is a typed error
    naming where the inputs came from and what failed."""
    feed = source.sample_inputs(seed)
    try:
        return source.reference(feed)
    except Exception as exc:   # ONNX Runtime raises its own exception types
        detail = " ".join(str(exc).split())[:600]
        guessed = [s.name for s in source.inputs if s.name in source.value_hints]
        hint = "" if source.samples else (
            "; give --sample-data FILE.npz with realistic values for "
            + ", ".join(guessed or [s.name for s in source.inputs]))
        raise ModelRunError(f"{source.reference_name} fails on {source.describe_inputs()}: "
                            f"{detail}{hint}") from exc
