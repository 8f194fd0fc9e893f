"""The quickstart: compile the shipped example model for this CPU and for aarch64.

    python examples/quickstart.py [--model examples/models/tiny_cnn.onnx] [--out DIR]

1. compiles ``examples/models/tiny_cnn.onnx`` for ``native`` and ``aarch64`` with
   ``--backend auto`` (every backend is built, verified against ONNX Runtime on the
   original model, benchmarked where this host can run the target, the fastest kept);
2. loads the native bundle with ``DLRModel`` and runs one inference;
3. runs the same inference on the aarch64 bundle under qemu (DLRModel inside an
   emulated aarch64 Python);
4. prints DLRModel's latency next to ONNX Runtime's on the original model, measured
   interleaved in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.runtime import DLRModel

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=HERE / "models" / "tiny_cnn.onnx")
    parser.add_argument("--out", type=Path, default=Path("out") / "quickstart")
    args = parser.parse_args()
    result = compile_model(CompileRequest(
        model=args.model, framework="onnx", inputs=[], targets=["native", "aarch64"],
        output=args.out, progress=lambda m: print(f"  {m}", file=sys.stderr)))
    for row in result.targets:
        if row.bundle is None:
            print(f"FAILED {row.target}: {row.error}")
            return 1
        _print_bundle(row.bundle)
    native = result.targets[0].bundle
    aarch64 = result.targets[1].bundle
    assert native is not None and aarch64 is not None
    x = np.random.default_rng(42).standard_normal((1, 3, 32, 32)).astype(np.float32)
    host_out = _native_inference(native.path, x)
    _emulated_inference(aarch64.path, x, host_out)
    _latency(native.path, args.model, x)
    return 0


def _print_bundle(bundle: object) -> None:
    meta = bundle.meta.neofleet  # type: ignore[attr-defined]
    print(f"\n{bundle.meta.requirements.target_device}: {bundle.path}")  # type: ignore[attr-defined]
    print(f"  digest    {bundle.digest}")  # type: ignore[attr-defined]
    print(f"  selected  {meta.backend} ({meta.selection.rule}: {meta.selection.reason})")
    v = meta.verification
    print(f"  verified  {v.method}, {v.samples} samples, max abs error {v.max_abs_error:.2e}")
    for cand in meta.candidates:
        timing = f"{cand.benchmark.median_ms:.3f} ms" if cand.benchmark else "not timed"
        err = cand.verification.max_abs_error if cand.verification else None
        err_text = f"max abs err {err:.2e}" if err is not None else cand.message
        print(f"    candidate {cand.backend:<12} {cand.status:<9} {timing:<10} {err_text}")


def _native_inference(bundle_dir: Path, x: np.ndarray) -> np.ndarray:
    model = DLRModel(bundle_dir, "cpu")
    out = model.run({"image": x})[0]
    print(f"\nDLRModel({bundle_dir}, 'cpu').run(x) -> class {int(out.argmax())}, "
          f"p={float(out.max()):.4f}")
    return out


def _emulated_inference(bundle_dir: Path, x: np.ndarray, host_out: np.ndarray) -> None:
    from neofleet.compiler.verify import run_probe

    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, image=x)
        start = time.perf_counter()
        run_probe(bundle_dir, inputs, outputs, emulate=True)
        seconds = time.perf_counter() - start
        with np.load(outputs, allow_pickle=False) as data:
            out = data["output_0"]
    diff = float(np.abs(out - host_out).max())
    print(f"aarch64 bundle under qemu-aarch64: class {int(out.argmax())}, "
          f"max |aarch64 - native| = {diff:.2e} ({seconds:.1f} s including emulator start)")


def _latency(bundle_dir: Path, model_path: Path, x: np.ndarray) -> None:
    import onnxruntime as ort

    threads = os.cpu_count() or 1
    model = DLRModel(bundle_dir, "cpu", num_threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in model.bundle.meta.neofleet.backend_options.get("session_config",
                                                                     {}).items():
        options.add_session_config_entry(key, value)  # the same settings for both
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    runners = {"neofleet DLRModel": lambda: model.run({"image": x}),
               "onnxruntime (original model)": lambda: session.run(None, {"image": x})}
    times = _interleaved(runners)
    base = times["onnxruntime (original model)"]
    print(f"\nbatch-1 latency, {threads} threads, same session settings, median of "
          "interleaved rounds:")
    for name, ms in times.items():
        print(f"  {name:<30} {ms:8.4f} ms   ({ms / base:.2f}x onnxruntime)")


def _interleaved(runners: dict[str, object], rounds: int = 8, per_round: int = 300
                 ) -> dict[str, float]:
    """Median per-call ms over rounds; the order rotates each round and each block starts
    after a pause, so neither runner always follows the other's busy thread pool."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():
        for _ in range(20):
            fn()  # type: ignore[operator]
    names = list(runners)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            fn = runners[name]
            time.sleep(0.05)
            start = time.perf_counter()
            for _ in range(per_round):
                fn()  # type: ignore[operator]
            samples[name].append((time.perf_counter() - start) * 1000 / per_round)
    return {name: float(np.median(values)) for name, values in samples.items()}


if __name__ == "__main__":
    sys.exit(main())
