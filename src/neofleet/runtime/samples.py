"""Verification samples a bundle carries, and running them on this host's hardware.

A GPU bundle compiled on a host without its GPU could not be run there, so its
``compiled.meta`` says ``verification.hardware_verified: false`` and the bundle carries the
compiler's seeded sample inputs with the reference outputs (ONNX Runtime on the original
model, or the exported program) in ``verification.npz``: plain arrays, read with
``allow_pickle=False``, keys ``sample<i>/in/<input name>`` and ``sample<i>/out/<j>``.
``neofleet serve`` runs them on the target GPU after loading and before it reports
ready (the operator's smoke run in the first canary pod), with the tolerance the compile
used, and exits 1 with ``HardwareVerificationFailed`` when they do not match.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from neofleet.bundle import Bundle, CompiledMeta
from neofleet.runtime.errors import HardwareVerificationError, IncompatibleBundleError

SAMPLES_NAME = "verification.npz"
log = logging.getLogger(__name__)


class _Model(Protocol):
    def run(self, input_values: Any) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Sample:
    inputs: dict[str, np.ndarray]
    reference: list[np.ndarray]


@dataclass(frozen=True)
class SamplesReport:
    samples: int
    max_abs_error: float
    max_rel_error: float


def write_samples(path: Path, samples: Sequence[Mapping[str, np.ndarray]],
                  references: Sequence[Sequence[np.ndarray]]) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for i, (inputs, outputs) in enumerate(zip(samples, references, strict=True)):
        arrays.update({f"sample{i}/in/{name}": np.asarray(v) for name, v in inputs.items()})
        arrays.update({f"sample{i}/out/{j}": np.asarray(v) for j, v in enumerate(outputs)})
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reserves allow_pickle
    return path


def read_samples(raw: bytes) -> list[Sample]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        found: dict[int, Sample] = {}
        for key in data.files:
            head, kind, name = [*key.split("/", 2), "", ""][:3]
            if not head.startswith("sample") or not head[6:].isdigit() or kind not in {"in",
                                                                                      "out"}:
                raise IncompatibleBundleError(f"{SAMPLES_NAME}: unexpected array {key!r}")
            sample = found.setdefault(int(head[6:]), Sample({}, []))
            if kind == "in":
                sample.inputs[name] = data[key]
        for i, sample in found.items():
            outs = sorted((k for k in data.files if k.startswith(f"sample{i}/out/")),
                          key=lambda k: int(k.rsplit("/", 1)[1]))
            sample.reference.extend(data[k] for k in outs)
    return [found[i] for i in sorted(found)]


def needs_hardware_check(meta: CompiledMeta) -> bool:
    """True when the compiler could not run the bundle on its hardware."""
    return meta.neofleet.verification.hardware_verified is False


def bundle_samples(bundle: Bundle) -> list[Sample]:
    """The bundle's samples, their digest checked against the verified manifest again (the
    bundle folder is read a second time, after the model was loaded from a private copy)."""
    name = bundle.meta.neofleet.backend_options.get("verification_samples")
    entry = bundle.manifest.files.get(name) if isinstance(name, str) else None
    if entry is None:
        raise HardwareVerificationError(
            "the bundle was not verified on hardware when it was compiled and carries no "
            f"verification samples ({SAMPLES_NAME}) to check it with here")
    raw = (bundle.path / str(name)).read_bytes()
    if hashlib.sha256(raw).hexdigest() != entry.sha256:
        raise HardwareVerificationError(f"{name} changed after the bundle was verified")
    return read_samples(raw)


def check_samples(model: _Model, samples: Sequence[Sample], *, rtol: float,
                  atol: float) -> SamplesReport:
    """Run every sample and compare it with its reference; raise on the first mismatch."""
    max_abs = max_rel = 0.0
    for i, sample in enumerate(samples):
        got = model.run(sample.inputs)
        if len(got) != len(sample.reference):
            raise HardwareVerificationError(f"sample {i}: {len(got)} outputs, the reference "
                                            f"has {len(sample.reference)}")
        for j, (actual, want) in enumerate(zip(got, sample.reference, strict=True)):
            abs_err, rel_err = _compare(i, j, np.asarray(actual), want, rtol, atol)
            max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
    return SamplesReport(len(samples), max_abs, max_rel)


def _compare(i: int, j: int, got: np.ndarray, want: np.ndarray, rtol: float,
             atol: float) -> tuple[float, float]:
    where = f"sample {i}, output {j}"
    if got.shape != want.shape:
        raise HardwareVerificationError(f"{where}: shape {list(got.shape)}, the reference has "
                                        f"{list(want.shape)}")
    if want.dtype.kind in "iub":
        if not np.array_equal(got, want):
            wrong = int(np.count_nonzero(got != want))
            raise HardwareVerificationError(f"{where}: {wrong} of {want.size} values differ "
                                            "from the reference (integer outputs must match)")
        return 0.0, 0.0
    diff = np.nan_to_num(np.abs(got.astype(np.float64) - want.astype(np.float64)), nan=0.0)
    scale = np.abs(want.astype(np.float64))
    big = scale > atol
    abs_err = float(diff.max()) if diff.size else 0.0
    rel_err = float((diff[big] / scale[big]).max()) if big.any() else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        raise HardwareVerificationError(
            f"{where} differs from the reference computed at compile time: max abs error "
            f"{abs_err:.3g}, max rel error {rel_err:.3g} (rtol {rtol}, atol {atol})")
    return abs_err, rel_err


def verify_on_this_host(model: _Model, bundle: Bundle) -> SamplesReport | None:
    """When the bundle was not verified on hardware: run its samples here (raises
    ``HardwareVerificationError`` when they do not match). None when it was verified."""
    if not needs_hardware_check(bundle.meta):
        return None
    verification = bundle.meta.neofleet.verification
    report = check_samples(model, bundle_samples(bundle), rtol=verification.rtol,
                           atol=verification.atol)
    log.info("hardware verification: %d samples match the compile-time reference on this "
             "host (max abs error %.3g, max rel error %.3g)", report.samples,
             report.max_abs_error, report.max_rel_error)
    return report


WARMUP_NAME = "warmup.npz"


def warmup_inputs(bundle: Bundle) -> list[np.ndarray] | None:
    """The inputs the compiler verified on (``warmup.npz``: one array per input, named
    after it), in input order, for the server's warm-up run; None when the bundle carries
    none (zeros are used then). Zeros are no valid input for every model: a sample rate
    of 0 takes Silero VAD down a branch its 16 kHz shapes do not fit."""
    name = bundle.meta.neofleet.backend_options.get("warmup_inputs")
    if name is None:
        return None
    if name not in bundle.manifest.files:     # listed, so its digest was checked
        raise IncompatibleBundleError(f"warmup_inputs {name!r} is not listed in the manifest")
    with np.load(bundle.path / str(name), allow_pickle=False) as data:
        try:
            return [np.array(data[spec.name]) for spec in bundle.meta.model.inputs]
        except KeyError as exc:
            raise IncompatibleBundleError(f"{name} lacks input {exc}") from exc
