"""Run a bundle on inputs from an .npz file: the compiler's verification and benchmark
runner, used on the host and under qemu for other architectures.

    python -m neofleet.runtime.probe BUNDLE --inputs in.npz --outputs out.npz \
        [--warmup N] [--repeat N] [--threads N] [--dev-type cpu|gpu]

The inputs file holds either one sample (keys are the input names) or several (keys
``sample<i>/<input name>``); outputs are written as ``output_<j>`` or
``sample<i>/output_<j>`` accordingly. ``--budget-s`` stops timing early once that many
seconds were spent. ``--variant`` forces one path of a multi-path backend (tree bundles:
``rows`` or ``forest``); for models that take any number of rows, ``--cycle-rows N`` times
N-row slices of the sample (a different slice each call) and ``--time-rows 1,8,64`` does so
at each count (``rows_ms``). Prints one JSON line: load seconds, and median/p90 latency when
``--repeat`` > 0. Exits
non-zero with a one-line reason on a NeofleetError. Arrays are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.errors import NeofleetError
from neofleet.telemetry import block_library_telemetry


def main(argv: list[str] | None = None) -> int:
    block_library_telemetry()
    parser = argparse.ArgumentParser(prog="neofleet.runtime.probe")
    parser.add_argument("bundle")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--outputs")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--budget-s", type=float, default=0.0)
    parser.add_argument("--variant", help="force one of the backend's paths (tree bundles)")
    parser.add_argument("--dev-type", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--cycle-rows", type=int, default=0,
                        help="time slices of this many rows of the sample, a different "
                             "slice each call (models whose inputs take any number of rows)")
    parser.add_argument("--time-rows", default="",
                        help="comma-separated row counts: time the model at each (models "
                             "whose inputs take any number of rows), reported as rows_ms")
    args = parser.parse_args(argv)
    try:
        report = _probe(args)
    except NeofleetError as exc:
        print(json.dumps({"error": str(exc), "reason": exc.reason}))
        return 2
    print(json.dumps(report))
    return 0


def _probe(args: argparse.Namespace) -> dict[str, Any]:
    from neofleet.runtime.model import DLRModel

    start = time.perf_counter()
    model = DLRModel(args.bundle, args.dev_type, num_threads=args.threads,
                     variant=args.variant)
    report: dict[str, Any] = {"load_seconds": time.perf_counter() - start}
    samples = _read_samples(args.inputs, model.get_input_names())
    results = {}
    for prefix, inputs in samples.items():
        for j, output in enumerate(model.run(inputs)):
            results[f"{prefix}output_{j}"] = output
    if args.outputs:
        save_arrays(Path(args.outputs), results)
    first = next(iter(samples.values()))
    report.update(_time(model, _feeds(first, args.cycle_rows), args))
    if args.time_rows:
        report["rows_ms"] = {count: float(_time(model, _feeds(first, int(count)), args)
                                          .get("median_ms", float("nan")))
                             for count in args.time_rows.split(",")}
    return report


def _feeds(inputs: dict[str, np.ndarray], rows: int | None) -> list[dict[str, np.ndarray]]:
    """The inputs to cycle through while timing: the sample itself, or consecutive
    ``rows``-row slices of it (distinct rows each call, so a branch predictor cannot learn
    one row; a sample with fewer rows is tiled)."""
    if not rows:
        return [inputs]
    total = min(v.shape[0] for v in inputs.values())
    if total < rows:
        return [{k: np.ascontiguousarray(np.resize(v, (rows, *v.shape[1:])))
                 for k, v in inputs.items()}]
    return [{k: np.ascontiguousarray(v[i:i + rows]) for k, v in inputs.items()}
            for i in range(0, total - rows + 1, rows)]


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays as an .npz (read back with ``allow_pickle=False``)."""
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reserves allow_pickle


def _read_samples(path: str, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        if all("/" not in k for k in keys):
            return {"": {n: data[n] for n in names if n in data}} if keys else {}
        prefixes = sorted({k.split("/", 1)[0] for k in keys}, key=lambda p: (len(p), p))
        return {f"{p}/": {n: data[f"{p}/{n}"] for n in names if f"{p}/{n}" in data}
                for p in prefixes}


def _time(model: object, feeds: list[dict[str, np.ndarray]],
          args: argparse.Namespace) -> dict[str, float | int]:
    run = model.run  # type: ignore[attr-defined]
    for i in range(args.warmup):
        run(feeds[i % len(feeds)])
    times: list[float] = []
    deadline = time.perf_counter() + args.budget_s if args.budget_s > 0 else None
    for i in range(args.repeat):
        inputs = feeds[i % len(feeds)]
        t0 = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - t0) * 1000.0)
        if deadline is not None and time.perf_counter() > deadline and len(times) >= 5:
            break
    if not times:
        return {}
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "runs": len(times)}


if __name__ == "__main__":
    sys.exit(main())
