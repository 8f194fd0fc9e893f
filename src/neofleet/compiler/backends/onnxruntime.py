"""ONNX Runtime backend: an offline-optimized ONNX model plus the session options.

The offline pass runs ONNX Runtime's *extended* graph optimizations (constant folding,
node fusions with contrib ops every CPU build has) and saves ``compiled.onnx``. Layout
transformations (``ORT_ENABLE_ALL``: NCHWc blocking) depend on the exact CPU, so they
are not baked in: the bundle records that the runtime applies them when it loads the
model on the target machine. ``session_config`` entries are applied by the runtime as
recorded.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target
from neofleet.telemetry import block_library_telemetry

ARTIFACT = "compiled.onnx"
# ONNX Runtime's defaults (spinning intra-op threads): measured fastest on a quiet host,
# which is what a user running ONNX Runtime directly gets. Entries here are recorded in
# the bundle and applied by the runtime (e.g. "session.intra_op.allow_spinning": "0" for
# nodes whose cores are shared with other work).
SESSION_CONFIG: dict[str, str] = {}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if target.device_type != "cpu":
            return "the onnxruntime backend builds CPU bundles only"
        if source.onnx_path is None:
            return "no ONNX form of the model: " + "; ".join(source.notes or ["not exported"])
        return None

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        ort, onnx = _imports()
        assert source.onnx_path is not None
        start = time.perf_counter()
        dest = workdir / ARTIFACT
        offline = _optimize_offline(ort, source, dest)
        from neofleet.compiler.ingest.onnx import op_histogram

        return Artifact(
            backend=self.name, files={ARTIFACT: dest}, artifact=ARTIFACT,
            options={"graph_optimization_level": "ORT_ENABLE_ALL",
                     "offline_optimization_level": offline,
                     "source_graph": source.graph,
                     "intra_op_num_threads": 0,
                     "session_config": dict(SESSION_CONFIG)},
            versions={"onnxruntime": ort.__version__, "onnx": onnx.__version__},
            graph={"backend": self.name, "ops": op_histogram(onnx.load(str(dest)))},
            build_seconds=time.perf_counter() - start)


def _optimize_offline(ort: Any, source: SourceModel, dest: Path) -> str:
    """Save ONNX Runtime's extended optimizations of the graph as ``dest``; the level done.

    The prepared graph is optimized; an original graph (kept because preparation broke
    the model) is optimized too when ONNX Runtime can, else shipped as given (``none``):
    the runtime still applies every optimization when it loads it."""
    assert source.onnx_path is not None
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session_options.optimized_model_filepath = str(dest)
    try:
        ort.InferenceSession(str(source.onnx_path), session_options,
                             providers=["CPUExecutionProvider"])
        return "ORT_ENABLE_EXTENDED"
    except Exception as exc:
        if source.graph == "prepared":
            raise BackendBuildError(f"onnxruntime could not optimize the model: {exc}") from exc
    shutil.copyfile(source.onnx_path, dest)
    return "none"


def _imports() -> tuple[Any, Any]:
    block_library_telemetry()
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("the onnxruntime backend needs onnx and onnxruntime: "
                                      "pip install 'neofleet[compiler]'") from exc
    return ort, onnx
