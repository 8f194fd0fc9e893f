"""OpenVINO backend: the model as OpenVINO IR (``compiled.xml`` + ``compiled.bin``).

ONNX Runtime's graph is what a user would otherwise ship; OpenVINO's CPU plugin measured
0.5-0.8x of its latency on real CNNs and encoders here at fp32, so it is a candidate of
``auto`` on x86_64 CPU targets and wins only when the benchmark says so.

The IR is read with ``Core.read_model`` from the same ONNX graph the other candidates
use (the prepared one when it is faithful), reshaped to the declared input shapes and
saved with fp32 weights (``compress_to_fp16=False``; OpenVINO's default halves them).
OpenVINO's telemetry (a usage event on import and on every ``convert_model``, sent
unless the user opted out) is blocked before OpenVINO is imported
(``runtime.backends.openvino.import_openvino``), and ``convert_model`` is never called.
The bundle records the inference precision, the performance hint and the stream count;
the runtime always sets them explicitly, because on CPUs with bf16 (AMX, avx512_bf16)
OpenVINO's default precision is bf16, which would silently change the numerics.

Not built yet: aarch64 bundles (the emulated aarch64 Python that verifies them has no
OpenVINO), PyTorch models without an ONNX form, TFLite, bf16/int8 precisions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target

ARTIFACT = "compiled.xml"
WEIGHTS = "compiled.bin"
# recorded in the bundle, applied as recorded by the runtime (never OpenVINO's defaults)
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": "1"}


class OpenVinoBackend:
    name = "openvino"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if target.device_type != "cpu":
            return "the openvino backend builds CPU bundles only"
        if target.arch != "x86_64":
            return ("OpenVINO bundles are built for x86_64 only so far (aarch64 ones could "
                    "not be verified: the emulated aarch64 Python has no OpenVINO)")
        if source.onnx_path is None:
            return "no ONNX form of the model: " + "; ".join(source.notes or ["not exported"])
        try:
            _openvino()
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        ov = _openvino()
        assert source.onnx_path is not None
        start = time.perf_counter()
        try:
            model = ov.Core().read_model(str(source.onnx_path))
            model.reshape({spec.name: ov.PartialShape(spec.shape) for spec in source.inputs})
            ov.save_model(model, str(workdir / ARTIFACT), compress_to_fp16=False)
        except Exception as exc:   # OpenVINO raises RuntimeError/OpConversionFailure alike
            detail = " ".join(str(exc).split())[:600]
            raise BackendBuildError(f"OpenVINO cannot convert the model: {detail}") from exc
        return Artifact(
            backend=self.name, files={ARTIFACT: workdir / ARTIFACT, WEIGHTS: workdir / WEIGHTS},
            artifact=ARTIFACT,
            options={"weights": WEIGHTS, "config": dict(RUNTIME_CONFIG),
                     "precision": "fp32", "source_graph": source.graph},
            versions={"openvino": ov.__version__.split("-")[0]},
            graph={"backend": self.name, "ops": _op_histogram(model)},
            build_seconds=time.perf_counter() - start)


def _op_histogram(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Parameter", "Result", "Constant"):
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _openvino() -> Any:
    from neofleet.runtime.backends.openvino import import_openvino
    from neofleet.runtime.errors import BackendUnavailableError as RuntimeUnavailable

    try:
        return import_openvino()          # with OpenVINO's telemetry blocked
    except RuntimeUnavailable as exc:
        raise BackendUnavailableError(str(exc)) from exc
