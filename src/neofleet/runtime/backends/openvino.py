"""Run an OpenVINO IR bundle (``compiled.xml`` + ``compiled.bin``) on OpenVINO's CPU plugin.

Every setting the bundle records (``config``: inference precision, performance hint,
streams) is set explicitly, and the precision is read back from the compiled model: on
CPUs with bf16 OpenVINO would otherwise pick bf16 and change the numerics. With
``NEOFLEET_CACHE`` set (runtime pods: the bundle cache volume) the compiled blob is kept
in ``$NEOFLEET_CACHE/openvino`` so a restarted pod skips the compile. Each calling thread
gets its own infer request, so ``run`` is safe from many threads at once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.errors import BackendUnavailableError, IncompatibleBundleError
from neofleet.telemetry import block_library_telemetry, openvino_telemetry_blocked


def import_openvino() -> Any:
    """``import openvino`` with its telemetry blocked (``neofleet.telemetry``)."""
    block_library_telemetry()
    if not openvino_telemetry_blocked():
        raise BackendUnavailableError("openvino was imported before neofleet could block its "
                                      "telemetry (neofleet.telemetry); import neofleet first")
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError("the openvino backend needs openvino: "
                                      "pip install 'neofleet[runtime]'") from exc
    return openvino


class OpenVinoBackend:
    def __init__(self, artifact: Path, weights: Path, *, options: dict[str, Any],
                 input_names: list[str], output_names: list[str],
                 num_threads: int | None) -> None:
        ov = import_openvino()
        config = {str(k): str(v) for k, v in dict(options.get("config") or {}).items()}
        if "INFERENCE_PRECISION_HINT" not in config:
            raise IncompatibleBundleError("the bundle records no OpenVINO inference precision "
                                          "(refusing OpenVINO's CPU-dependent default)")
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = str(num_threads)
        core = ov.Core()
        cache = _cache_dir()
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
        try:
            model = core.read_model(str(artifact), str(weights))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:   # OpenVINO raises RuntimeError for every failure
            raise IncompatibleBundleError(f"OpenVINO {ov.__version__} cannot load this bundle: "
                                          f"{' '.join(str(exc).split())[:400]}") from exc
        _check_precision(self._compiled, config["INFERENCE_PRECISION_HINT"])
        self._input_names, self._output_names = input_names, output_names
        self._outputs = [self._compiled.output(name) for name in output_names]
        self._local = threading.local()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer(dict(zip(self._input_names, inputs, strict=True)))
        return [np.array(results[port], copy=True) for port in self._outputs]


def _check_precision(compiled: Any, wanted: str) -> None:
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    got = value.to_string() if hasattr(value, "to_string") else str(value)   # an ov.Type
    if got != wanted:
        raise IncompatibleBundleError(f"OpenVINO runs this bundle at {got}, the bundle was "
                                      f"verified at {wanted}")


def _cache_dir() -> Path | None:
    base = os.environ.get("NEOFLEET_CACHE")
    if not base:
        return None
    folder = Path(base) / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None                    # a read-only cache: compile at every start
    return folder if os.access(folder, os.W_OK) else None
