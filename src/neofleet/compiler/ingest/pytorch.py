"""PyTorch ingest: a ``torch.export`` archive (``.pt2``) read with ``torch.export.load``.

Pickled checkpoints (``torch.save`` of a module) are refused: a ``.pt2`` is a zip archive
of JSON graphs and raw weights. The archive is checked member by member before torch
opens it (see ``_check_archive``), and ``torch.export.load`` runs with every
``torch.load`` forced to ``weights_only=True``. The reference is the exported program
itself. An ONNX copy (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``)
lets ONNX Runtime be a candidate; where that export fails, the ONNX Runtime candidate
is marked not applicable with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import BackendUnavailableError, ModelLoadError
from neofleet.compiler.ingest.samples import load_sample_file
from neofleet.compiler.ingest.source import (
    SourceModel,
    file_sha256,
    output_specs,
    run_reference,
)
from neofleet.compiler.inputs import InputDecl, ModelInput, resolve_inputs

_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "float64": "float64",
                 "bfloat16": "bfloat16", "int8": "int8", "uint8": "uint8", "int16": "int16",
                 "int32": "int32", "int64": "int64", "bool": "bool"}


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError("PyTorch models need torch in the compile image: "
                                      "pip install torch==2.13.0") from exc
    return torch


def load_exported_program(path: Path, decls: Sequence[InputDecl], workdir: Path,
                          sample_data: Path | None = None) -> SourceModel:
    _check_archive(path)
    torch = _torch()
    try:
        with _weights_only_loads(torch):
            program = torch.export.load(str(path))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"torch.export.load cannot read {path.name}: {exc}") from exc
    inputs = resolve_inputs(_model_inputs(program), decls)
    reference = _reference(torch, program, inputs)
    names = [str(n) for n in program.graph_signature.user_outputs]
    source = SourceModel(framework="pytorch", path=path, sha256=file_sha256(path),
                         inputs=inputs, outputs=[], reference=reference,
                         reference_name="torch.export", exported_program=program,
                         ops=_op_histogram(program))
    if sample_data is not None:
        source.samples = load_sample_file(sample_data, inputs)
    source.outputs = output_specs(names, run_reference(source, 0))
    _export_onnx(torch, source, workdir / "exported.onnx")
    return source


def _check_archive(path: Path) -> None:
    """Accept only a plain .pt2 archive; refuse anything that would make torch unpickle.

    ``torch.export.load`` unpickles payloads marked ``use_pickle``, custom and opaque
    constants, legacy ``.pt`` weight files, and falls back to ``weights_only=False`` for
    sample inputs; AOTInductor packages carry native code. All of those are refused here,
    before torch reads the file.
    """
    refusal = (f"{path.name} is not a torch.export archive; pickled checkpoints (torch.save, "
               "joblib) are refused. Export with torch.export.save(torch.export.export(model, "
               "args), 'model.pt2')")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(refusal)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if not any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            raise ModelLoadError(refusal)
        for name in names:
            _check_member(archive, name, path.name)


def _check_member(archive: zipfile.ZipFile, name: str, filename: str) -> None:
    parts = name.split("/")
    if "aotinductor" in parts or parts[-1] == "data.pkl":
        raise ModelLoadError(f"{filename}: {name} holds native code or pickles; refused")
    if len(parts) >= 2 and parts[-2] in {"weights", "constants"} and name.endswith(".pt"):
        raise ModelLoadError(f"{filename}: legacy pickled payload {name} is refused; "
                             "re-export with a current torch.export.save")
    if name.endswith("_weights_config.json") or name.endswith("_constants_config.json"):
        _check_payload_config(json.loads(archive.read(name)), name, filename)


def _check_payload_config(doc: Any, name: str, filename: str) -> None:
    entries = doc.get("config", {}) if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise ModelLoadError(f"{filename}: {name} is malformed")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ModelLoadError(f"{filename}: payload {fqn} is pickled; refused")
        if "constants" in name and not str(meta.get("path_name", "")).startswith("tensor_"):
            raise ModelLoadError(f"{filename}: constant {fqn} is a custom object; refused")


@contextlib.contextmanager
def _weights_only_loads(torch: Any) -> Iterator[None]:
    """Inside: any ``torch.load(weights_only=False)`` torch attempts is a refusal."""
    original = torch.load

    def guarded(*args: Any, weights_only: bool | None = True, **kwargs: Any) -> Any:
        if weights_only is False:
            raise ModelLoadError("the archive asks torch to unpickle arbitrary objects; refused")
        return original(*args, weights_only=True, **kwargs)

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = original


def _model_inputs(program: Any) -> list[ModelInput]:
    user_inputs = list(program.graph_signature.user_inputs)
    found = {}
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if value is None or not hasattr(value, "shape"):
                raise ModelLoadError(f"input {node.name} is not a tensor")
            dims = tuple(d if isinstance(d, int) else None for d in value.shape)
            dtype = _TORCH_DTYPES.get(str(value.dtype).removeprefix("torch."))
            if dtype is None:
                raise ModelLoadError(f"input {node.name} has unsupported dtype {value.dtype}")
            found[node.name] = ModelInput(name=node.name, dims=dims, dtype=dtype)
    return [found[name] for name in user_inputs]


def _op_histogram(program: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op == "call_function":
            key = str(node.target)
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _reference(torch: Any, program: Any, inputs: list[TensorSpec]) -> Any:
    module = program.module()

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in inputs]
        with torch.no_grad():
            result = module(*args)
        flat = torch.utils._pytree.tree_leaves(result)
        return [t.detach().cpu().numpy() for t in flat]

    return run


def _export_onnx(torch: Any, source: SourceModel, dest: Path) -> None:
    example = tuple(torch.from_numpy(a) for a in source.sample_inputs(0).values())
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(source.exported_program, example, str(dest), dynamo=True,
                              input_names=[s.name for s in source.inputs],
                              output_names=[s.name for s in source.outputs],
                              external_data=False)
    except Exception as exc:  # missing onnxscript, unsupported ops, ...
        source.notes.append(f"no ONNX export for ONNX Runtime: {type(exc).__name__}: {exc}")
        return
    source.onnx_path = dest
