"""Compose a bundle's ``compiled.meta`` from what the compile produced (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from neofleet import __version__
from neofleet.bundle.meta import (
    Benchmark,
    CandidateReport,
    Compilation,
    CompiledMeta,
    ModelSignature,
    NeofleetSection,
    Requirements,
    Selection,
    Verification,
)
from neofleet.compiler.backends.base import Artifact
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target


def compiled_meta(
    source: SourceModel,
    target: Target,
    artifact: Artifact,
    verification: Verification | None,
    benchmark: Benchmark | None,
    candidates: Sequence[CandidateReport],
    selection: Selection | None,
    compile_seconds: float,
) -> CompiledMeta:
    assert verification is not None
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return CompiledMeta(
        requirements=Requirements(target_device=target.name,
                                  target_device_type=target.device_type,
                                  target_arch=target.arch),
        model=ModelSignature(inputs=source.inputs, outputs=source.outputs),
        compilation=Compilation(created_time=now, compile_seconds=round(compile_seconds, 3)),
        neofleet=NeofleetSection(
            target=target.descriptor(), backend=artifact.backend,
            backend_options=artifact.options,
            compiler={"neofleet": __version__, **artifact.versions},
            framework=source.framework,
            source={"sha256": source.sha256, "filename": source.path.name,
                    "reference": source.reference_name, **source.source_library,
                    **_provenance(source)},
            verification=verification, benchmark=benchmark, candidates=list(candidates),
            selection=selection))


def _provenance(source: SourceModel) -> dict[str, str]:
    """Which graph the candidates built from (ONNX), what the samples were, and why."""
    found = {"samples": source.describe_inputs()}
    if source.framework == "onnx":
        found["graph"] = source.graph
    if source.notes:
        found["notes"] = "; ".join(source.notes)
    return found
