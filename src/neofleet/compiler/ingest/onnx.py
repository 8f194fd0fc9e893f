"""ONNX ingest: protobuf only, external data confined to the model's folder.

Steps: size and parse check, external-data paths checked (no absolute paths, nothing
outside the model's folder, no links), ``onnx.checker``, inputs resolved against the
declarations, the samples (``--sample-data``, or generated with value hints for integer
inputs: ``int_values``) run through the reference, then a *prepared* copy: input dims
fixed to the declared shapes and constant-folded by ONNX Runtime (basic level), which
TVM's ONNX frontend needs for real exported models (shape arithmetic inside the graph).
The reference is ONNX Runtime on the original, untouched model.

Preparation never breaks a model: when the prepared copy does not load (e.g. fixed dims
that an ``If`` branch's type inference rejects) or does not match the original's outputs
on the samples, the source keeps the original graph (``SourceModel.graph``), TVM does
not apply and the other candidates build from the original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import BackendUnavailableError, ModelLoadError
from neofleet.compiler.ingest.int_values import integer_value_hints
from neofleet.compiler.ingest.samples import load_sample_file
from neofleet.compiler.ingest.source import (
    SourceModel,
    file_sha256,
    output_specs,
    run_reference,
)
from neofleet.compiler.inputs import InputDecl, ModelInput, resolve_inputs
from neofleet.telemetry import block_library_telemetry

MAX_MODEL_BYTES = 2 << 30


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError("ONNX models need the onnx package: "
                                      "pip install 'neofleet[compiler]'") from exc
    return onnx


def load_onnx(path: Path, decls: Sequence[InputDecl], workdir: Path,
              sample_data: Path | None = None) -> SourceModel:
    onnx = _onnx()
    model = _parse(onnx, path)
    _load_external_data(onnx, model, path.parent)
    _check(onnx, model, path)
    inputs = resolve_inputs(model_inputs(onnx, model), decls)
    reference = _ort_reference(path)
    source = SourceModel(framework="onnx", path=path, sha256=file_sha256(path), inputs=inputs,
                         outputs=[], reference=reference, reference_name="onnxruntime",
                         onnx_path=path, ops=op_histogram(model), graph="original")
    if sample_data is not None:
        source.samples = load_sample_file(sample_data, inputs)
    else:
        source.value_hints = integer_value_hints(model, inputs)
    expected = run_reference(source, 0)
    source.outputs = output_specs([o.name for o in model.graph.output], expected)
    _use_prepared_if_faithful(source, model, workdir / "prepared.onnx", expected)
    return source


def _use_prepared_if_faithful(source: SourceModel, model: Any, dest: Path,
                              expected: list[np.ndarray]) -> None:
    try:
        prepared = prepare_static(model, source.inputs, dest)
        got = _ort_reference(prepared)(source.sample_inputs(0))
    except ModelLoadError as exc:
        source.notes.append(f"kept the original graph: the prepared copy (static dims, "
                            f"folded) failed: {exc}")
        return
    except Exception as exc:   # the prepared copy loads but fails to run
        source.notes.append(f"kept the original graph: the prepared copy fails to run: "
                            f"{' '.join(str(exc).split())[:300]}")
        return
    if not _same(expected, got):
        source.notes.append("kept the original graph: the prepared copy's outputs differ "
                            "from the original's on the samples")
        return
    source.onnx_path, source.graph = prepared, "prepared"


def _same(expected: list[np.ndarray], got: list[np.ndarray]) -> bool:
    def close(a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape:
            return False
        if a.dtype.kind not in "fc":
            return bool(np.array_equal(a, b))
        return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True))
    return len(expected) == len(got) and all(
        close(a, b) for a, b in zip(expected, got, strict=True))


def op_histogram(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _parse(onnx: Any, path: Path) -> Any:
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ModelLoadError(f"{path.name} is larger than {MAX_MODEL_BYTES} bytes")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: {exc}") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: the graph is empty")
    return model


def _load_external_data(onnx: Any, model: Any, base: Path) -> None:
    from onnx import external_data_helper as edh

    base = base.resolve()
    for tensor in edh._get_all_tensors(model):
        if not edh.uses_external_data(tensor):
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        _check_external_location(base, tensor.name, location)
    try:
        edh.load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model's external data: {exc}") from exc


def _check_external_location(base: Path, tensor: str, location: str) -> None:
    candidate = base / location
    if not location or Path(location).is_absolute() or ".." in Path(location).parts:
        raise ModelLoadError(f"tensor {tensor}: external data location {location!r} must be a "
                             f"relative path inside the model's folder")
    if candidate.is_symlink() or not candidate.resolve().is_relative_to(base):
        raise ModelLoadError(f"tensor {tensor}: external data {location!r} escapes the model's "
                             f"folder")
    if not candidate.is_file():
        raise ModelLoadError(f"tensor {tensor}: external data file {location!r} is missing")


def _check(onnx: Any, model: Any, path: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} fails the ONNX checker: {exc}") from exc


def model_inputs(onnx: Any, model: Any) -> list[ModelInput]:
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor_type.shape.dim)
        found.append(ModelInput(name=value.name, dims=dims, dtype=str(np.dtype(dtype))))
    if not found:
        raise ModelLoadError("the model declares no inputs")
    return found


def prepare_static(model: Any, inputs: list[TensorSpec], dest: Path) -> Path:
    """Fix input dims and let ONNX Runtime constant-fold shape arithmetic (basic level)."""
    onnx = _onnx()
    block_library_telemetry()
    import onnxruntime as ort

    static = onnx.ModelProto()
    static.CopyFrom(model)
    shapes = {s.name: s.shape for s in inputs}
    for value in static.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[value.name]:
                dims.add().dim_value = size
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = dest.with_suffix(".static.onnx")
    onnx.save(static, str(raw))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dest)
    try:
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load the model with the declared input "
                             f"shapes: {exc}") from exc
    return dest


def _ort_reference(path: Path) -> Any:
    block_library_telemetry()
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, dict(feed))]

    return run
