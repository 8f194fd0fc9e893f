"""Compile benchmark: neofleet bundles against ONNX Runtime and torch eager, side by side.

    .venv/bin/python benchmarks/compile_bench.py [--models resnet18,mobilenetv2,mlp]
        [--tuning-trials N] [--tuning-db DIR] [--work DIR] [--json-out PATH] [--quick]

For each model (defined in ``benchmarks/models.py``, fixed seeds) the script exports ONNX
once, compiles it with ``neofleet compile --target native --backend auto --json`` in a
child process (wall time and peak RSS of that child, read with ``wait4``), reads every
candidate's benchmark from the bundle's ``compiled.meta``, then times three runners
interleaved in this process with 2 threads and the same input: the bundle through
``DLRModel``, ONNX Runtime on the original exported ONNX, and torch eager. It prints a
plain-text table and a WARNING line for every bundle slower than ONNX Runtime by more than
10%. It never fails on timings. ``--quick`` runs only the MLP with shorter rounds (smoke
test). ``--corpus`` benchmarks the real-model corpus instead (``corpus_bench.py``). See
benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from models import INPUT_NAME, BenchCase, cases, cpu_model, export_onnx, workdir
from timing import Runner, Timing, measure_interleaved

THREADS = 2
WARN_RATIO = 1.10
RUNNERS = ("bundle", "onnxruntime", "torch")



@dataclass
class CompileOutcome:
    seconds: float
    peak_rss_mb: float
    bundle: str | None = None
    backend: str | None = None
    selection: str | None = None
    error: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    tuning_log: list[str] = field(default_factory=list)


@dataclass
class Row:
    model: str
    batch: int
    backend: str | None
    bundle_ms: float | None
    onnxruntime_ms: float
    torch_ms: float
    tvm_candidate_ms: float | None
    compile_s: float
    compile_peak_rss_mb: float
    bundle_process_rss_mb: float | None
    others_cpus: float | None
    candidates: list[dict[str, Any]]
    tuning_log: list[str]
    selection: str | None
    error: str | None
    max_abs_diff_vs_onnxruntime: dict[str, float]

    @property
    def ratio_ort(self) -> float | None:
        return _ratio(self.bundle_ms, self.onnxruntime_ms)

    @property
    def ratio_torch(self) -> float | None:
        return _ratio(self.bundle_ms, self.torch_ms)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bundle_over_onnxruntime": self.ratio_ort,
                "bundle_over_torch": self.ratio_torch}


def _ratio(a: float | None, b: float) -> float | None:
    return a / b if a is not None and b > 0 else None


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2,mlp",
                        help="comma-separated: resnet18, mobilenetv2, mlp (batch 1 and 64)")
    parser.add_argument("--tuning-trials", type=int, default=0)
    parser.add_argument("--tuning-db", type=Path,
                        help="tuning database root [default: neofleet's default]")
    parser.add_argument("--work", type=Path, help="keep ONNX files and bundles here")
    parser.add_argument("--json-out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="only the MLP, shorter rounds (smoke test)")
    parser.add_argument("--corpus", action="store_true",
                        help="the real-model corpus instead (benchmarks/corpus.json; "
                             "corpus_bench.py)")
    parser.add_argument("--names", default="", help="--corpus: only these entries (a,b,...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.corpus:
        import corpus_bench

        wanted = [n.strip() for n in args.names.split(",") if n.strip()] or None
        return corpus_bench.main(wanted, args.json_out, Timing(rounds=5, round_s=0.3))
    names = ["mlp"] if args.quick else [n.strip() for n in args.models.split(",") if n.strip()]
    timing = Timing(rounds=3, round_s=0.1, warmup_s=0.1) if args.quick else Timing()
    _log(f"threads={THREADS} cpu_count={os.cpu_count()} tuning_trials={args.tuning_trials} "
         f"tuning_db={args.tuning_db or 'default'}")
    with workdir(args.work, "neofleet-bench-") as work:
        rows = [bench_case(case, work / case.key, args, timing) for case in cases(names)]
    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs, {THREADS} threads per runner, "
          f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    print(format_table(rows))
    print(format_candidates(rows))
    for line in warnings_for(rows):
        print(line)
    if args.json_out:
        args.json_out.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    return 0






def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- one model ---------------------------------------------------------------------------


def bench_case(case: BenchCase, work: Path, args: argparse.Namespace, timing: Timing) -> Row:

    work.mkdir(parents=True, exist_ok=True)
    module, inputs = case.build()
    onnx_path = export_onnx(module, inputs, work / "model.onnx")
    _log(f"{case.key}: compiling")
    outcome = compile_bundle(onnx_path, tuple(inputs[0].shape), work / "out", args)
    _log(f"{case.key}: compiled in {outcome.seconds:.1f} s -> {outcome.backend or outcome.error}")
    x = inputs[0].numpy()
    runners = make_runners(outcome.bundle, onnx_path, module, x)
    diffs = output_diffs(runners)
    _log(f"{case.key}: timing {', '.join(runners)} interleaved")
    load = LoadMeter()
    medians = measure_interleaved(runners, timing)
    others = load.others_cpus()
    del runners
    gc.collect()
    rss = bundle_process_rss_mb(outcome.bundle, x) if outcome.bundle else None
    return Row(model=case.model, batch=case.batch, backend=outcome.backend,
               bundle_ms=medians.get("bundle"), onnxruntime_ms=medians["onnxruntime"],
               torch_ms=medians["torch"], tvm_candidate_ms=_candidate_ms(outcome, "tvm"),
               compile_s=outcome.seconds, compile_peak_rss_mb=outcome.peak_rss_mb,
               bundle_process_rss_mb=rss, others_cpus=others, candidates=outcome.candidates,
               tuning_log=outcome.tuning_log, selection=outcome.selection, error=outcome.error,
               max_abs_diff_vs_onnxruntime=diffs)




def _candidate_ms(outcome: CompileOutcome, backend: str) -> float | None:
    for cand in outcome.candidates:
        if cand["backend"] == backend:
            return cand["median_ms"]
    return None


# --- compile in a child process ----------------------------------------------------------


def compile_bundle(onnx_path: Path, shape: tuple[int, ...], out: Path,
                   args: argparse.Namespace) -> CompileOutcome:
    dims = "x".join(str(d) for d in shape)
    command = [sys.executable, "-m", "neofleet.cli", "compile", str(onnx_path),
               "--framework", "onnx", "--input", f"{INPUT_NAME}:{dims}", "--target", "native",
               "--output", str(out), "--backend", "auto",
               "--tuning-trials", str(args.tuning_trials), "--json"]
    if args.tuning_db:
        command += ["--tuning-db", str(args.tuning_db)]
    rc, stdout, stderr, seconds, peak_kb = run_measured(command)
    outcome = CompileOutcome(seconds=seconds, peak_rss_mb=peak_kb / 1024,
                             tuning_log=[line for line in stderr if "tuning:" in line])
    return _parse_compile(outcome, rc, stdout, stderr)


def run_measured(command: list[str]) -> tuple[int, str, list[str], float, int]:
    """Run ``command``, echoing its stderr; return rc, stdout, stderr lines, s, max RSS KB."""
    with tempfile.TemporaryFile() as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
        tail: list[str] = []
        echo = threading.Thread(target=_echo_stderr, args=(proc, tail), daemon=True)
        echo.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        echo.join()
        stdout.seek(0)
        return proc.returncode, stdout.read().decode(), tail, seconds, usage.ru_maxrss


def _echo_stderr(proc: subprocess.Popen[str], tail: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        print(f"  | {line.rstrip()}", file=sys.stderr, flush=True)
        tail.append(line.rstrip())


def _parse_compile(outcome: CompileOutcome, rc: int, stdout: str,
                   stderr_lines: list[str]) -> CompileOutcome:
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        last = stderr_lines[-1] if stderr_lines else "no output"
        outcome.error = f"compiler exited {rc} without a JSON result: {last}"
        return outcome
    if "targets" not in doc:
        outcome.error = f"{doc.get('reason')}: {doc.get('message')}"
        return outcome
    target = doc["targets"][0]
    if target["status"] != "Succeeded":
        outcome.error = f"{target['reason']}: {target['message']}"
        return outcome
    outcome.bundle, outcome.backend = target["bundle"], target["backend"]
    outcome.selection = (target.get("selection") or {}).get("reason")
    outcome.candidates = read_candidates(Path(target["bundle"]))
    return outcome


def read_candidates(bundle_dir: Path) -> list[dict[str, Any]]:
    from neofleet.bundle import open_bundle

    rows = []
    for cand in open_bundle(bundle_dir).meta.neofleet.candidates:
        rows.append({"backend": cand.backend, "status": cand.status,
                     "median_ms": cand.benchmark.median_ms if cand.benchmark else None,
                     "build_seconds": cand.build_seconds, "message": cand.message})
    return rows


# --- runners and interleaved timing ------------------------------------------------------


def make_runners(bundle: str | None, onnx_path: Path, module: Any,
                 x: np.ndarray) -> dict[str, Runner]:
    runners: dict[str, Runner] = {}
    if bundle is not None:
        runners["bundle"] = _bundle_runner(bundle, x)
    runners["onnxruntime"] = _ort_runner(onnx_path, x)
    runners["torch"] = _torch_runner(module, x)
    return runners


def _bundle_runner(bundle: str, x: np.ndarray) -> Runner:
    from neofleet.runtime import DLRModel

    model = DLRModel(bundle, "cpu", num_threads=THREADS)
    return lambda: model.run(x)[0]


def _ort_runner(onnx_path: Path, x: np.ndarray) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})[0]


def _torch_runner(module: Any, x: np.ndarray) -> Runner:
    import torch

    torch.set_num_threads(THREADS)
    tensor = torch.from_numpy(x)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return module(tensor).numpy()

    return run


def output_diffs(runners: dict[str, Runner]) -> dict[str, float]:
    reference = np.asarray(runners["onnxruntime"]())
    return {name: float(np.max(np.abs(np.asarray(run()) - reference)))
            for name, run in runners.items() if name != "onnxruntime"}


class LoadMeter:
    """CPUs kept busy by everything but this process (other jobs, steal) since creation."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, time.process_time()

    def others_cpus(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, own = (b - a for a, b in zip(self._start, end, strict=True))
        return max(0.0, (busy - own) / wall)


# --- RSS of a process that only holds the bundle -----------------------------------------

_HOLD_SNIPPET = """
import json, sys
import numpy as np
from neofleet.runtime import DLRModel
model = DLRModel(sys.argv[1], "cpu", num_threads=int(sys.argv[2]))
x = np.load(sys.argv[3])
for _ in range(3):
    model.run(x)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}))
"""


def bundle_process_rss_mb(bundle: str, x: np.ndarray) -> float | None:
    """VmRSS (MB) of a fresh process that loaded the bundle and ran it three times."""
    input_path = Path(bundle).parent / "bench_input.npy"
    np.save(input_path, x)
    try:
        proc = subprocess.run([sys.executable, "-c", _HOLD_SNIPPET, bundle, str(THREADS),
                               str(input_path)], capture_output=True, text=True, timeout=600,
                              check=False)
        return json.loads(proc.stdout.strip().splitlines()[-1])["VmRSS"] / 1024
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError, KeyError):
        return None
    finally:
        input_path.unlink(missing_ok=True)


# --- output ------------------------------------------------------------------------------

COLUMNS = ("model", "batch", "backend", "bundle ms", "ORT ms", "torch ms", "bundle/ORT",
           "bundle/torch", "tvm cand ms", "compile s", "compile RSS MB", "bundle RSS MB",
           "others' CPUs")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(row: Row) -> list[str]:
    tvm = _fmt(row.tvm_candidate_ms)
    if tvm == "-" and any(c["backend"] == "tvm" and c["status"] == "failed"
                          for c in row.candidates):
        tvm = "failed"
    return [row.model, str(row.batch), row.backend or "FAILED", _fmt(row.bundle_ms),
            _fmt(row.onnxruntime_ms), _fmt(row.torch_ms), _fmt(row.ratio_ort, 2),
            _fmt(row.ratio_torch, 2), tvm, _fmt(row.compile_s, 1),
            _fmt(row.compile_peak_rss_mb, 0), _fmt(row.bundle_process_rss_mb, 0),
            _fmt(row.others_cpus, 2)]


def format_table(rows: list[Row]) -> str:
    body = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_candidates(rows: list[Row]) -> str:
    lines = ["", "candidates (from compiled.meta; median ms measured by the compiler):"]
    for row in rows:
        label = f"{row.model} b{row.batch}"
        if row.error:
            lines.append(f"  {label}: compile failed: {row.error}")
        for cand in row.candidates:
            note = f"  {cand['message']}" if cand["status"] in ("failed", "not-applicable") \
                else ""
            lines.append(f"  {label}: {cand['backend']:<12} {cand['status']:<15} "
                         f"{_fmt(cand['median_ms'])} ms{note}")
        lines += [f"  {label}: {line.strip()}" for line in row.tuning_log]
    return "\n".join(lines)


def warnings_for(rows: list[Row]) -> list[str]:
    out = []
    for row in rows:
        if row.ratio_ort is not None and row.ratio_ort > WARN_RATIO:
            out.append(f"WARNING: {row.model} batch {row.batch}: the {row.backend} bundle is "
                       f"{row.ratio_ort:.2f}x ONNX Runtime ({row.bundle_ms:.3f} ms vs "
                       f"{row.onnxruntime_ms:.3f} ms), above {WARN_RATIO:.2f}")
        if row.error:
            out.append(f"WARNING: {row.model} batch {row.batch}: compile failed: {row.error}")
    return out


if __name__ == "__main__":
    sys.exit(main())
