"""Tree models: an XGBoost classifier compiled into bundles for this CPU and for aarch64.

    python examples/tree_model.py [--out DIR] [--trees 60]

1. trains a small XGBoost classifier on seeded synthetic data and saves it the safe way
   (``booster.save_model("model.json")``; neofleet never loads pickles);
2. compiles it for ``native`` and ``aarch64`` (TL2cgen C + the forest kernel, verified
   against XGBoost's own predict on both paths; aarch64 under qemu);
3. predicts five rows with ``DLRModel`` and shows the labels next to XGBoost's;
4. prints latency at 1 and 1024 rows next to XGBoost, a different slice of rows per call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.runtime import DLRModel

FEATURES = 20


def make_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    return x, (np.sin(x[:, :5]).sum(axis=1) + x[:, 5] * x[:, 6] > 0).astype(np.int64)


def median_ms(predict: Callable[[np.ndarray], Any], pool: np.ndarray, rows: int,
              seconds: float = 0.5) -> float:
    times, at, end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        if at + rows > len(pool):
            at = 0
        batch = pool[at:at + rows]
        at += rows
        t0 = time.perf_counter()
        predict(batch)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    import xgboost as xgb

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--trees", type=int, default=60)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="neofleet-trees-"))
    out.mkdir(parents=True, exist_ok=True)

    x, y = make_data(5000, seed=0)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 2},
                        xgb.DMatrix(x, y), args.trees)
    model_file = out / "model.json"
    booster.save_model(str(model_file))
    print(f"trained {args.trees} trees, saved {model_file}")

    result = compile_model(CompileRequest(
        model=model_file, framework="xgboost", inputs=[], targets=["native", "aarch64"],
        output=out / "bundles", progress=lambda m: print(f"  {m}", file=sys.stderr)))
    for row in result.to_json()["targets"]:
        if row["status"] != "Succeeded":
            print(f"{row['target']}: FAILED {row['reason']}: {row['message']}")
            return 1
        tree = row["verification"]
        print(f"{row['target']:<8} {row['backend']} bundle verified ({tree['method']}, "
              f"{tree['message']}) {row['digest']}")

    model = DLRModel(out / "bundles" / "native")
    rows = make_data(5, seed=1)[0]
    probabilities, labels = model.run(rows)
    print(f"DLRModel labels  {labels.tolist()}  p(class 1) {np.round(probabilities[:, 1], 3)}")
    print(f"XGBoost labels   {(booster.inplace_predict(rows) > 0.5).astype(int).tolist()}")
    options = model.get_metadata()["Neofleet"]["backend_options"]
    print(f"path choice: {options['crossover']}")

    pool = make_data(50_000, seed=2)[0]
    for n in (1, 1024):
        mine = median_ms(model.run, pool, n)
        theirs = median_ms(booster.inplace_predict, pool, n)
        print(f"{n:>5} rows: DLRModel {mine:.3f} ms, XGBoost {theirs:.3f} ms "
              f"({theirs / mine:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
