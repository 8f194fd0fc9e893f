"""Verify a candidate bundle against the source model's reference, and time it.

The candidate is run through the runtime's own loader (``neofleet.runtime.probe``) in a
child process: natively when the host can run the target, under qemu for aarch64. A
crash of miscompiled native code then fails the candidate, not the compiler.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import Benchmark, Verification
from neofleet.compiler.errors import CompileError, VerificationError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.runtime.probe import save_arrays


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-3
    atol: float = 1e-4
    samples: int = 3


@dataclass(frozen=True)
class Comparison:
    passed: bool
    max_abs: float
    max_rel: float
    message: str


def compare_outputs(expected: list[np.ndarray], actual: list[np.ndarray],
                    tol: Tolerance) -> Comparison:
    """Pure: every output must have the same shape and dtype kind and be allclose."""
    if len(expected) != len(actual):
        return Comparison(False, float("inf"), float("inf"),
                          f"{len(actual)} outputs, the reference has {len(expected)}")
    max_abs = max_rel = 0.0
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if want.shape != got.shape:
            return Comparison(False, float("inf"), float("inf"),
                              f"output {i}: shape {got.shape}, reference {want.shape}")
        if want.dtype.kind in "iub" and not np.array_equal(got, want):
            wrong = int(np.count_nonzero(got != want))
            return Comparison(False, float("inf"), float("inf"),
                              f"output {i}: {wrong} of {want.size} values differ from the "
                              "reference (integer outputs, e.g. class labels, must match "
                              "exactly)")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if diff.size:
            if np.isnan(diff).any() and not np.array_equal(np.isnan(got), np.isnan(want)):
                return Comparison(False, float("nan"), float("nan"), f"output {i}: NaN mismatch")
            finite = np.nan_to_num(diff, nan=0.0)
            scale = np.abs(want.astype(np.float64))
            max_abs = max(max_abs, float(finite.max()))
            big = scale > tol.atol
            if big.any():
                max_rel = max(max_rel, float((finite[big] / scale[big]).max()))
        if not np.allclose(got, want, rtol=tol.rtol, atol=tol.atol, equal_nan=True):
            return Comparison(False, max_abs, max_rel,
                              f"output {i} differs from the reference: max abs error "
                              f"{max_abs:.3g}, max rel error {max_rel:.3g} "
                              f"(rtol {tol.rtol}, atol {tol.atol})")
    return Comparison(True, max_abs, max_rel, "")


def run_probe(bundle_dir: Path, inputs: Path, outputs: Path, *, emulate: bool,
              warmup: int = 0, repeat: int = 0, budget_s: float = 0.0,
              threads: int | None = None, timeout_s: float = 900,
              extra_args: list[str] | None = None) -> dict[str, Any]:
    if emulate:
        from neofleet.compiler.emulation import emulated_probe

        return emulated_probe(bundle_dir, inputs, outputs, timeout_s=timeout_s,
                              warmup=warmup, repeat=repeat, extra_args=extra_args)
    command = [sys.executable, "-m", "neofleet.runtime.probe", str(bundle_dir),
               "--inputs", str(inputs), "--outputs", str(outputs),
               "--warmup", str(warmup), "--repeat", str(repeat), "--budget-s", str(budget_s),
               *(extra_args or [])]
    if threads:
        command += ["--threads", str(threads)]
    return _run_child(command, timeout_s)


def _run_child(command: list[str], timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(f"the candidate did not finish within {timeout_s:.0f} s") from exc
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0:
        detail = report.get("error") or _tail(done.stderr) or f"exit status {done.returncode}"
        if done.returncode < 0:
            detail = f"crashed with signal {-done.returncode}: {_tail(done.stderr)}"
        raise VerificationError(f"running the candidate failed: {detail}")
    return report


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def verify_bundle(bundle_dir: Path, source: SourceModel, tol: Tolerance, workdir: Path,
                  *, emulate: bool, variants: Sequence[str | None] = (None,),
                  dev_type: str = "cpu") -> Verification:
    """Run ``tol.samples`` seeded samples through every variant of the bundle (a tree
    bundle's rows and forest paths) and compare each with the reference. ``dev_type``
    "gpu": on this host's GPU (method ``gpu``)."""
    results = [_verify_variant(bundle_dir, source, tol, workdir, emulate, v, dev_type)
               for v in variants]
    failed = [(v, r) for v, r in zip(variants, results, strict=True) if not r.passed]
    if failed:
        variant, result = failed[0]
        prefix = f"{variant} path: " if variant else ""
        return result.model_copy(update={"message": prefix + result.message})
    return results[0].model_copy(update={
        "max_abs_error": max(r.max_abs_error or 0.0 for r in results),
        "max_rel_error": max(r.max_rel_error or 0.0 for r in results),
        "message": f"paths verified: {', '.join(str(v) for v in variants)}"
        if len(variants) > 1 else ""})


def _verify_variant(bundle_dir: Path, source: SourceModel, tol: Tolerance, workdir: Path,
                    emulate: bool, variant: str | None, dev_type: str = "cpu") -> Verification:
    samples = [source.sample_inputs(seed)
               for seed in range(source.verification_count(tol.samples))]
    inputs_path, outputs_path = workdir / "verify-in.npz", workdir / "verify-out.npz"
    save_arrays(inputs_path, {f"sample{i}/{k}": v for i, s in enumerate(samples)
                              for k, v in s.items()})
    method = "qemu-aarch64" if emulate else "gpu" if dev_type == "gpu" else "host"
    extra = (["--variant", variant] if variant else []) + (
        ["--dev-type", dev_type] if dev_type != "cpu" else [])
    try:
        run_probe(bundle_dir, inputs_path, outputs_path, emulate=emulate,
                  extra_args=extra or None)
    except CompileError as exc:
        return Verification(passed=False, message=str(exc), method=method,
                            samples=len(samples), rtol=tol.rtol, atol=tol.atol)
    with np.load(outputs_path, allow_pickle=False) as data:
        actual = [[data[k] for k in sorted((k for k in data if k.startswith(f"sample{i}/")),
                                           key=_output_index)] for i in range(len(samples))]
    worst = Comparison(True, 0.0, 0.0, "")
    for sample, got in zip(samples, actual, strict=True):
        result = compare_outputs(source.reference(sample), got, tol)
        worst = _worse(worst, result)
    return Verification(passed=worst.passed, max_abs_error=worst.max_abs,
                        max_rel_error=worst.max_rel, message=worst.message, method=method,
                        samples=len(samples), rtol=tol.rtol, atol=tol.atol)


def _output_index(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def _worse(a: Comparison, b: Comparison) -> Comparison:
    if not b.passed and a.passed:
        return b
    if not a.passed:
        return a
    return Comparison(True, max(a.max_abs, b.max_abs), max(a.max_rel, b.max_rel), "")


OUT_OF_CONTENTION = 5.0


def benchmark_bundles(bundles: Mapping[str, Path], source: SourceModel, workdir: Path, *,
                      threads: int, rounds: int = 3, budget_s: float = 1.0) -> dict[str, Benchmark]:
    """Time every bundle on this host, interleaved: ``rounds`` rounds, the order rotating
    each round, one child process per measurement. Each bundle keeps its best round, so a
    burst of load from other work cannot decide which candidate wins. A bundle whose first
    round is more than ``OUT_OF_CONTENTION`` times the fastest's cannot win and is not
    timed again (untuned TVM on a large CNN: minutes of rounds for nothing); its first
    round is its benchmark."""
    inputs_path, outputs_path = workdir / "bench-in.npz", workdir / "bench-out.npz"
    # models that take any number of rows (trees) are timed one row per call, a different
    # row each time, from a 1024-row sample (seed 5)
    any_rows = source.sampler is not None
    sample = source.sample_inputs(5 if any_rows else 0)
    save_arrays(inputs_path, sample)
    extra = ["--cycle-rows", "1"] if any_rows else None
    names = list(bundles)
    best: dict[str, dict[str, Any]] = {}
    for round_index in range(rounds):
        if best:
            fastest = min(r["median_ms"] for r in best.values())
            names = [n for n in names if best[n]["median_ms"] <= OUT_OF_CONTENTION * fastest]
        shift = round_index % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            report = run_probe(bundles[name], inputs_path, outputs_path, emulate=False,
                               warmup=3, repeat=2000, budget_s=budget_s, threads=threads,
                               extra_args=extra)
            if name not in best or report["median_ms"] < best[name]["median_ms"]:
                best[name] = report
    host = f"{platform.machine()} {_cpu_model()}"
    shapes = {name: [1, *a.shape[1:]] if any_rows else list(a.shape)
              for name, a in sample.items()}
    return {name: Benchmark(host=host, threads=threads, batch_inputs=shapes,
                            median_ms=r["median_ms"], p90_ms=r["p90_ms"], runs=r["runs"])
            for name, r in best.items()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


VARIANT_ROW_COUNTS = (1, 4, 16, 64, 256, 1024)


def time_variants(bundle_dir: Path, variants: Sequence[str], source: SourceModel,
                  workdir: Path, *, threads: int, rounds: int = 2,
                  budget_s: float = 0.15) -> dict[str, dict[str, float]]:
    """Median ms per row count for each forced variant, interleaved rounds, best kept."""
    inputs_path, outputs_path = workdir / "rows-in.npz", workdir / "rows-out.npz"
    # seed 5: a tree model's 1024-row sample (distinct rows: repeating one row would let
    # the branch predictor learn it and flatter the rows path)
    save_arrays(inputs_path, source.sample_inputs(5))
    counts = ",".join(str(n) for n in VARIANT_ROW_COUNTS)
    best: dict[str, dict[str, float]] = {}
    for round_index in range(rounds):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for variant in order:
            report = run_probe(bundle_dir, inputs_path, outputs_path, emulate=False, warmup=2,
                               repeat=500, budget_s=budget_s, threads=threads,
                               extra_args=["--variant", variant, "--time-rows", counts])
            mine = best.setdefault(variant, {})
            for n, ms in report.get("rows_ms", {}).items():
                mine[n] = min(ms, mine.get(n, float("inf")))
    return best
