"""Run an (offline-optimized) ONNX model with ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.errors import BackendUnavailableError
from neofleet.telemetry import block_library_telemetry

_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


class OnnxRuntimeBackend:
    def __init__(self, artifact: Path, *, options: dict[str, Any], input_names: list[str],
                 output_names: list[str], num_threads: int | None) -> None:
        block_library_telemetry()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("the onnxruntime backend needs onnxruntime: "
                                          "pip install 'neofleet[runtime]'") from exc
        session_options = ort.SessionOptions()
        level = str(options.get("graph_optimization_level", "ORT_ENABLE_ALL"))
        if level not in _LEVELS:
            raise BackendUnavailableError(f"unknown graph_optimization_level {level!r}")
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        threads = num_threads or int(options.get("intra_op_num_threads", 0))
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        for key, value in dict(options.get("session_config", {})).items():
            session_options.add_session_config_entry(str(key), str(value))
        self._session = ort.InferenceSession(str(artifact), sess_options=session_options,
                                             providers=["CPUExecutionProvider"])
        self._input_names = input_names
        self._output_names = output_names

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        feed = dict(zip(self._input_names, inputs, strict=True))
        return [np.asarray(o) for o in self._session.run(self._output_names, feed)]
