"""Small valid bundles for tests that need one without compiling anything."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from neofleet.bundle import Bundle, CompiledMeta, write_bundle

ARTIFACT_NAMES = {"onnxruntime": "compiled.onnx", "tvm": "compiled.so",
                  "tensorrt": "compiled.plan"}
DEFAULT_ARTIFACT = b"not a real model, only bytes to carry around\n"


def make_meta(
    *, backend: str = "onnxruntime", arch: str = "x86_64", source_sha256: str = "0" * 64
) -> CompiledMeta:
    """A valid ``CompiledMeta`` with fixed values (so equal inputs give equal bundles)."""
    doc: dict[str, Any] = {
        "Requirements": {
            "TargetDevice": f"linux-{arch}",
            "TargetDeviceType": "cpu",
            "TargetArch": arch,
        },
        "Model": {
            "Inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
            "Outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32"}],
        },
        "Compilation": {"CreatedTime": "2024-01-01T00:00:00Z", "CompileSeconds": 0.5},
        "Neofleet": {
            "target": {"name": f"linux-{arch}", "arch": arch, "device": "cpu"},
            "backend": backend,
            "compiler": {"neofleet": "0.1.0"},
            "framework": "onnx",
            "source": {"sha256": source_sha256},
            "verification": {
                "passed": True,
                "method": "not-run",
                "samples": 0,
                "rtol": 1e-5,
                "atol": 1e-5,
            },
        },
    }
    return CompiledMeta.model_validate(doc)


def make_bundle(
    dest: Path,
    *,
    artifact_bytes: bytes = DEFAULT_ARTIFACT,
    backend: str = "onnxruntime",
    arch: str = "x86_64",
    extra_files: dict[str, bytes] | None = None,
    meta: CompiledMeta | None = None,
) -> Bundle:
    """Write a valid bundle at ``dest`` whose artifact holds ``artifact_bytes`` (and
    ``meta`` instead of ``make_meta``'s, when given)."""
    artifact = ARTIFACT_NAMES.get(backend, "compiled.bin")
    contents = {artifact: artifact_bytes, **(extra_files or {})}
    meta = meta or make_meta(
        backend=backend, arch=arch, source_sha256=hashlib.sha256(artifact_bytes).hexdigest()
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, data in contents.items():
            (Path(tmp) / name).write_bytes(data)
            files[name] = Path(tmp) / name
        return write_bundle(
            dest,
            files=files,
            artifact=artifact,
            backend=backend,
            meta=meta,
            graph={"nodes": 1, "backend": backend},
        )
