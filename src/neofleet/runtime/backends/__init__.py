"""Runtime backends, one module each, chosen by the manifest's ``backend`` field."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from neofleet.bundle import Bundle
from neofleet.runtime.errors import IncompatibleBundleError


class ModelBackend(Protocol):
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


def load_backend(
    bundle: Bundle, *, dev_type: str, dev_id: int, num_threads: int | None
) -> ModelBackend:
    name = bundle.manifest.backend
    if name == "tvm":
        from neofleet.runtime.backends.tvm import TvmBackend

        return TvmBackend(bundle.artifact_path, dev_type=dev_type, dev_id=dev_id,
                          num_threads=num_threads)
    if name == "onnxruntime":
        from neofleet.runtime.backends.onnxruntime import OnnxRuntimeBackend

        options = bundle.meta.neofleet.backend_options
        return OnnxRuntimeBackend(bundle.artifact_path, options=options,
                                  output_names=[t.name for t in bundle.meta.model.outputs],
                                  input_names=[t.name for t in bundle.meta.model.inputs],
                                  num_threads=num_threads)
    raise IncompatibleBundleError(f"this runtime has no backend {name!r} (bundle backend)")
