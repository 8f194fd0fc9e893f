"""GPU benchmark: tvm-cuda bundles through ``DLRModel(..., "gpu")`` next to PyTorch eager on
the same GPU, in the same run, numerics checked against ONNX Runtime.

    .venv/bin/python benchmarks/gpu_bench.py [--models resnet18,mobilenetv2]
        [--batches 1,32] [--target PRESET] [--work DIR] [--json-out PATH]
        [--rtol 1e-3 --atol 1e-3]

Needs an NVIDIA GPU, its driver, the CUDA runtime the bundle names (``libcudart.so.13``
for TVM 0.27) and a CUDA build of torch; it stops at once with a clear message when any
is missing. For each model (``benchmarks/models.py``: standard ResNet-18 and MobileNetV2
defined in code, fixed seeds, no downloads) and batch size, the script exports ONNX with
that batch, compiles it with ``neofleet compile --backend tvm-cuda`` for the catalogue
preset matching GPU 0 (``--target`` to choose) in a child process (the compiler then
verifies the bundle on this GPU: ``verification.method: gpu``), and times, interleaved in
this process on the same input:

- ``tvm-cuda``: ``DLRModel(bundle, "gpu").run(x)`` (copies the input to the GPU and the
  outputs back, as a server does);
- ``torch``: ``module.cuda()`` under ``torch.inference_mode()`` on
  ``torch.from_numpy(x).cuda()``, ``.cpu()`` at the end (the same copies).

ONNX Runtime (CPU) runs each exported model once as the numerical reference; the
bundle's outputs must be within ``--rtol/--atol`` of it (torch's difference is printed too:
cuDNN may use TF32 on Ampere and later). The table gives the median milliseconds and the
ratio tvm-cuda/torch. Exits 1 when a compile fails or numerics do not match, 2 when the
host cannot run the benchmark. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from models import INPUT_NAME, export_onnx, mobilenetv2, resnet18, workdir
from timing import Runner, Timing, measure_interleaved

BUILDERS = {"resnet18": resnet18, "mobilenetv2": mobilenetv2}


@dataclass
class Row:
    model: str
    batch: int
    target: str
    tvm_ms: float | None = None
    torch_ms: float | None = None
    tvm_max_abs_vs_ort: float | None = None
    torch_max_abs_vs_ort: float | None = None
    numerics_ok: bool = False
    verification: str = ""
    compile_s: float | None = None
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.tvm_ms is None or not self.torch_ms:
            return None
        return self.tvm_ms / self.torch_ms


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--target", help="catalogue preset (default: the one matching GPU 0)")
    parser.add_argument("--work", type=Path, help="keep ONNX files and bundles here")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem, target, gpu_name = check_host(args.target)
    if problem:
        print(f"gpu_bench: cannot run: {problem}", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        print(f"gpu_bench: unknown model(s) {unknown}; choose from {sorted(BUILDERS)}",
              file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    timing = Timing(rounds=10, round_s=0.2, warmup_s=0.5)
    _log(f"GPU 0: {gpu_name}; target preset {target}")
    with workdir(args.work, "neofleet-gpu-bench-") as work:
        rows = [bench(name, batch, target, work / f"{name}-b{batch}", args, timing)
                for name in names for batch in batches]
    print(f"GPU: {gpu_name}; target preset {target}; torch eager and tvm-cuda measured "
          "interleaved in one process, input copied to the GPU and outputs back in both")
    print(format_table(rows))
    for row in rows:
        if row.error:
            print(f"FAILED {row.model} batch {row.batch}: {row.error}")
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows],
                                            indent=2) + "\n")
    return 0 if all(r.numerics_ok and not r.error for r in rows) else 1


def check_host(requested: str | None) -> tuple[str, str, str]:
    """(problem, target preset, GPU name): a problem when this host cannot run it."""
    from neofleet.compiler.targets import CATALOGUE, get_target
    from neofleet.runtime.gpu import detect_gpus, kernels_run_on

    host = detect_gpus()
    if not host.gpus:
        return f"this benchmark needs an NVIDIA GPU; this host has {host.describe()}", "", ""
    gpu = host.gpus[0]
    try:
        import torch
    except ImportError:
        return "torch is not installed (PyTorch eager is the comparison)", "", ""
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} cannot use the GPU (a CPU-only build?): install a "
                "CUDA build of torch to compare against PyTorch eager", "", "")
    presets = [t for t in CATALOGUE if t.cuda is not None and t.arch == "x86_64"]
    if requested:
        target = get_target(requested)
        if target.cuda is None or not kernels_run_on(target.cuda.arch, gpu.compute_capability):
            return f"{requested} kernels do not run on {gpu.describe()}", "", ""
        return "", requested, gpu.name
    fitting = [t for t in presets if t.cuda and kernels_run_on(t.cuda.arch,
                                                               gpu.compute_capability)]
    if not fitting:
        return (f"no catalogue preset's kernels run on {gpu.describe()}; give --target",
                "", "")
    exact = [t for t in fitting if t.compute_capability == gpu.cc]
    return "", (exact or fitting)[-1].name, gpu.name


def bench(name: str, batch: int, target: str, work: Path, args: argparse.Namespace,
          timing: Timing) -> Row:
    import torch

    row = Row(model=name, batch=batch, target=target)
    work.mkdir(parents=True, exist_ok=True)
    module, (x1,) = BUILDERS[name]()
    gen = torch.Generator().manual_seed(batch)
    x_t = torch.randn(batch, *x1.shape[1:], generator=gen)
    onnx_path = export_onnx(module, (x_t,), work / "model.onnx")
    _log(f"{name} b{batch}: compiling for {target} (tvm-cuda)")
    bundle, row.compile_s, error = compile_bundle(onnx_path, tuple(x_t.shape), target,
                                                  work / "out")
    if bundle is None:
        row.error = error
        return row
    meta = json.loads((bundle / "compiled.meta").read_text())
    v = meta["Neofleet"]["verification"]
    row.verification = f"{v['method']}, passed={v['passed']}, max abs {v['max_abs_error']}"
    x = x_t.numpy()
    reference = ort_outputs(onnx_path, x)
    runners = {"tvm-cuda": tvm_runner(bundle, x), "torch": torch_runner(module, x)}
    outs = {k: np.asarray(run()) for k, run in runners.items()}
    row.tvm_max_abs_vs_ort = float(np.max(np.abs(outs["tvm-cuda"] - reference)))
    row.torch_max_abs_vs_ort = float(np.max(np.abs(outs["torch"] - reference)))
    row.numerics_ok = bool(np.allclose(outs["tvm-cuda"], reference, rtol=args.rtol,
                                       atol=args.atol))
    if not row.numerics_ok:
        row.error = (f"tvm-cuda outputs differ from ONNX Runtime: max abs "
                     f"{row.tvm_max_abs_vs_ort:.3g} (rtol {args.rtol}, atol {args.atol})")
    _log(f"{name} b{batch}: timing tvm-cuda and torch eager interleaved")
    medians = measure_interleaved(runners, timing)
    row.tvm_ms, row.torch_ms = medians["tvm-cuda"], medians["torch"]
    return row


def compile_bundle(onnx_path: Path, shape: tuple[int, ...], target: str,
                   out: Path) -> tuple[Path | None, float, str]:
    from compile_bench import run_measured

    dims = "x".join(str(d) for d in shape)
    command = [sys.executable, "-m", "neofleet.cli", "compile", str(onnx_path),
               "--framework", "onnx", "--input", f"{INPUT_NAME}:{dims}", "--target", target,
               "--output", str(out), "--backend", "tvm-cuda", "--json"]
    rc, stdout, stderr, seconds, _ = run_measured(command)
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None, seconds, f"compiler exited {rc}: {stderr[-1] if stderr else 'no output'}"
    result = (doc.get("targets") or [{}])[0]
    if result.get("status") != "Succeeded":
        return None, seconds, f"{result.get('reason') or doc.get('reason')}: " \
                              f"{result.get('message') or doc.get('message')}"
    return Path(result["bundle"]), seconds, ""


def ort_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def tvm_runner(bundle: Path, x: np.ndarray) -> Runner:
    from neofleet.runtime import DLRModel

    model = DLRModel(bundle, "gpu")
    return lambda: model.run(x)[0]


def torch_runner(module: Any, x: np.ndarray) -> Runner:
    import torch

    gpu_module = module.cuda().eval()
    host = torch.from_numpy(x)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return gpu_module(host.cuda()).cpu().numpy()

    return run


COLUMNS = ("model", "batch", "target", "tvm-cuda ms", "torch ms", "tvm/torch",
           "tvm max abs vs ORT", "torch max abs vs ORT", "compile s", "compile-time verification")


def format_table(rows: list[Row]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    body = [list(COLUMNS)] + [
        [r.model, str(r.batch), r.target, fmt(r.tvm_ms, ".3f"), fmt(r.torch_ms, ".3f"),
         fmt(r.ratio, ".2f"), fmt(r.tvm_max_abs_vs_ort, ".2e"),
         fmt(r.torch_max_abs_vs_ort, ".2e"), fmt(r.compile_s, ".1f"),
         r.verification or "-"] for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[gpu-bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
