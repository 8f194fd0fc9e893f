"""Tree ensembles: neofleet bundles against each source library's own predict.

A script, not a test. For each library it trains a ``--trees``-tree, depth-``--depth``
binary classifier on seeded synthetic data (``--features`` features with interactions, so
the trees fill out), saves it in the library's safe format, compiles it with
``neofleet compile --target native`` in a child process, and then times, in this process
and in interleaved rounds:

- ``native``: the library's predict (XGBoost ``inplace_predict`` and LightGBM ``predict``
  with ``--threads`` threads, scikit-learn ``predict_proba`` with its default ``n_jobs``:
  joblib's per-call overhead made ``n_jobs=2`` ~11 ms slower per call here);
- ``bundle``: ``DLRModel(bundle, num_threads=T).run(x)``, the path chosen per call by the
  crossover measured at compile time;
- ``rows`` / ``forest``: the bundle with each path forced.

Every call gets different rows (consecutive slices of a 100k-row pool): repeating one
input lets the CPU's branch predictor learn it, which flatters if/else tree code ~3x.
Output agreement with the library is checked before timing. The table goes to stdout,
progress to stderr.

    .venv/bin/python benchmarks/tree_bench.py [--libraries xgboost,lightgbm,sklearn]
        [--trees 500] [--depth 8] [--features 50] [--threads N] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from models import cpu_model, workdir
from timing import Runner, Timing, measure_interleaved

BATCHES = (1, 64, 1024)
POOL_ROWS = 100_000
LIBRARIES = ("xgboost", "lightgbm", "sklearn")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    score = np.sin(x[:, :10]).sum(axis=1) + x[:, 10] * x[:, 11] - 0.5 * x[:, 12] ** 2
    return x, (score + 0.5 * rng.standard_normal(rows) > 0).astype(np.int64)


def train(library: str, args: argparse.Namespace, folder: Path) -> tuple[Path, str]:
    """Train and save; returns (model file, neofleet --framework)."""
    x, y = make_data(20_000, args.features, seed=0)
    if library == "xgboost":
        import xgboost as xgb

        booster = xgb.train({"objective": "binary:logistic", "max_depth": args.depth,
                             "eta": 0.1, "nthread": args.threads}, xgb.DMatrix(x, y), args.trees)
        path = folder / "xgb.json"
        booster.save_model(str(path))
        return path, "xgboost"
    if library == "lightgbm":
        import lightgbm as lgb

        params = {"objective": "binary", "max_depth": args.depth, "num_leaves": 2 ** args.depth,
                  "min_data_in_leaf": 5, "verbose": -1, "num_threads": args.threads}
        path = folder / "lgb.txt"
        lgb.train(params, lgb.Dataset(x, y), args.trees).save_model(str(path))
        return path, "lightgbm"
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(args.trees, max_depth=args.depth, n_jobs=args.threads,
                                    random_state=0).fit(x, y)
    path = folder / "rf.skops"
    sio.dump(forest, str(path))
    return path, "sklearn"


def native_predict(library: str, model: Path, threads: int) -> Callable[[np.ndarray], Any]:
    """The library's own probability of class 1."""
    if library == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(model))
        booster.set_param({"nthread": threads})
        return lambda x: booster.inplace_predict(x)
    if library == "lightgbm":
        import lightgbm as lgb

        lgb_booster = lgb.Booster(model_file=str(model))
        return lambda x: lgb_booster.predict(x, num_threads=threads)
    import skops.io as sio

    forest = sio.load(str(model), trusted=sio.get_untrusted_types(file=str(model)))
    forest.set_params(n_jobs=None)  # scikit-learn's default; n_jobs=2 measured ~11 ms/call
    return lambda x: forest.predict_proba(x)[:, 1]


def compile_bundle(model: Path, framework: str, out: Path) -> tuple[Path, float]:
    command = [sys.executable, "-m", "neofleet.cli", "compile", str(model), "--framework",
               framework, "--target", "native", "--output", str(out), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"compile failed: {done.stdout[-2000:]}")
    return out / "native", seconds


def cycling(predict: Callable[[np.ndarray], Any], pool: np.ndarray, batch: int) -> Runner:
    """A runner that predicts the next ``batch`` rows of ``pool`` on every call."""
    state = {"at": 0}

    def run() -> Any:
        at = state["at"]
        if at + batch > len(pool):
            at = 0
        state["at"] = at + batch
        return predict(pool[at:at + batch])

    return run


def bench_library(library: str, args: argparse.Namespace, work: Path,
                  timing: Timing) -> list[dict[str, Any]]:
    from neofleet.bundle import open_bundle
    from neofleet.runtime import DLRModel

    folder = work / library
    folder.mkdir(parents=True, exist_ok=True)
    _log(f"[{library}] training {args.trees} trees, depth {args.depth}")
    model, framework = train(library, args, folder)
    _log(f"[{library}] compiling with neofleet")
    bundle, compile_s = compile_bundle(model, framework, folder / "out")
    options = open_bundle(bundle).meta.neofleet.backend_options
    dtype = open_bundle(bundle).meta.model.inputs[0].dtype
    pool = make_data(POOL_ROWS, args.features, seed=1)[0].astype(dtype)
    predictors = {"native": native_predict(library, model, args.threads)}
    for name, variant in (("bundle", None), ("rows", "rows"), ("forest", "forest")):
        loaded = DLRModel(bundle, num_threads=args.threads, variant=variant)
        predictors[name] = lambda x, m=loaded: m.run(x)[0][:, 1]
    check = pool[:512]
    diffs = {name: float(np.max(np.abs(np.asarray(p(check)) - predictors["native"](check))))
             for name, p in predictors.items() if name != "native"}
    rows = []
    for batch in BATCHES:
        _log(f"[{library}] timing batch {batch}")
        runners = {name: cycling(p, pool, batch) for name, p in predictors.items()}
        ms = measure_interleaved(runners, timing)
        rows.append({"library": library, "batch": batch, "ms": ms,
                     "speedup": ms["native"] / ms["bundle"], "compile_s": compile_s,
                     "crossover_rows": options.get("crossover_rows"),
                     "max_abs_diff": max(diffs.values())})
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, {args.threads} threads each; "
          f"{args.trees} trees, depth {args.depth}, {args.features} features; "
          "median ms per call, distinct rows every call")
    print(f"{'library':<10} {'batch':>5} {'native':>9} {'bundle':>9} {'rows':>9} "
          f"{'forest':>9} {'native/bundle':>13} {'crossover':>9} {'compile s':>9}")
    for r in rows:
        ms = r["ms"]
        print(f"{r['library']:<10} {r['batch']:>5} {ms['native']:>9.3f} {ms['bundle']:>9.3f} "
              f"{ms['rows']:>9.3f} {ms['forest']:>9.3f} {r['speedup']:>12.2f}x "
              f"{r['crossover_rows']!s:>9} {r['compile_s']:>9.1f}")
    print("max |bundle - native| probability: "
          + ", ".join(f"{r['library']} {r['max_abs_diff']:.2e}" for r in rows[::len(BATCHES)]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--quick", action="store_true",
                        help="20 trees, depth 4, short rounds: a smoke test, not a measurement")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timing = Timing()
    if args.quick:
        args.trees, args.depth, timing = 20, 4, Timing(rounds=3, round_s=0.05, warmup_s=0.05)
    rows: list[dict[str, Any]] = []
    with workdir(args.work, "neofleet-tree-bench-") as work:
        for library in args.libraries.split(","):
            rows += bench_library(library, args, work, timing)
    print_table(rows, args)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
