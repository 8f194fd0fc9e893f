"""Runtime backends, one module each, chosen by the manifest's ``backend`` field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from neofleet.bundle import Bundle
from neofleet.runtime.errors import IncompatibleBundleError

if TYPE_CHECKING:
    from neofleet.runtime.backends.tvm import TvmRequirements


class ModelBackend(Protocol):
    """A loaded model; ``run`` must be safe to call from many threads at once."""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


def _listed(bundle: Bundle, name: object) -> Path | None:
    """A file the bundle's meta names, only if the manifest lists (and so verified) it."""
    if name is None:
        return None
    if not isinstance(name, str) or name not in bundle.manifest.files:
        raise IncompatibleBundleError(f"{name!r} is named in compiled.meta but not listed in "
                                      "the manifest")
    return bundle.path / name


def tvm_requirements(bundle: Bundle) -> TvmRequirements:
    """The runtime library the bundle carries (verified by open_bundle) and tvm-ffi version."""
    from neofleet.runtime.backends.tvm import TvmRequirements

    name = bundle.meta.neofleet.backend_options.get("runtime_library")
    if name is not None and name not in bundle.manifest.files:
        raise IncompatibleBundleError(f"runtime_library {name!r} is not listed in the manifest")
    entry = bundle.manifest.files[name] if name else None
    return TvmRequirements(runtime_library=bundle.path / name if name else None,
                           runtime_sha256=entry.sha256 if entry else None,
                           tvm_ffi_version=bundle.meta.neofleet.compiler.get("tvm_ffi"))


def load_backend(
    bundle: Bundle, *, dev_type: str, dev_id: int, num_threads: int | None,
    variant: str | None = None,
) -> ModelBackend:
    name = bundle.manifest.backend
    if name == "tl2cgen":
        from neofleet.runtime.backends.trees import TreeBackend

        options = bundle.meta.neofleet.backend_options
        return TreeBackend(bundle.artifact_path, _listed(bundle, options.get("forest")),
                           options, num_threads=num_threads, variant=variant)
    if variant is not None:
        raise IncompatibleBundleError(f"the {name} backend has no variant {variant!r}")
    if name == "tvm":
        from neofleet.runtime.backends.tvm import TvmBackend

        return TvmBackend(bundle.artifact_path, tvm_requirements(bundle), dev_type=dev_type,
                          dev_id=dev_id, num_threads=num_threads)
    if name == "tvm-cuda":
        from neofleet.runtime.backends.tvm_cuda import TvmCudaBackend, cudart_name

        options = bundle.meta.neofleet.backend_options
        return TvmCudaBackend(bundle.artifact_path, tvm_requirements(bundle),
                              cuda_library=_listed(bundle, options.get("cuda_runtime_library")),
                              cudart=cudart_name(options), dev_id=dev_id,
                              num_threads=num_threads)
    if name == "tensorrt":
        from neofleet.runtime.backends.tensorrt import TensorRtBackend, engine_requirements

        options = bundle.meta.neofleet.backend_options
        model = bundle.meta.model
        return TensorRtBackend(bundle.artifact_path, engine_requirements(bundle),
                               dev_type=dev_type, dev_id=dev_id,
                               input_names=options.get("engine_inputs")
                               or [t.name for t in model.inputs],
                               output_names=options.get("engine_outputs")
                               or [t.name for t in model.outputs],
                               output_dtypes=[t.dtype for t in model.outputs])
    if name == "openvino":
        from neofleet.runtime.backends.openvino import OpenVinoBackend

        options = bundle.meta.neofleet.backend_options
        weights = _listed(bundle, options.get("weights"))
        if weights is None:
            raise IncompatibleBundleError("an openvino bundle must list its weights file")
        return OpenVinoBackend(bundle.artifact_path, weights, options=options,
                               output_names=[t.name for t in bundle.meta.model.outputs],
                               input_names=[t.name for t in bundle.meta.model.inputs],
                               num_threads=num_threads)
    if name == "onnxruntime":
        from neofleet.runtime.backends.onnxruntime import OnnxRuntimeBackend

        options = bundle.meta.neofleet.backend_options
        return OnnxRuntimeBackend(bundle.artifact_path, options=options,
                                  output_names=[t.name for t in bundle.meta.model.outputs],
                                  input_names=[t.name for t in bundle.meta.model.inputs],
                                  num_threads=num_threads)
    raise IncompatibleBundleError(f"this runtime has no backend {name!r} (bundle backend)")
