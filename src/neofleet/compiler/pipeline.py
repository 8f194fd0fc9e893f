"""``compile_model``: ingest → backends → verify → select → bundle, per target.

Everything that can be checked up front (targets, backend names, the model, the input
declarations) is checked before anything is written. Each candidate is built and written
as a provisional bundle in a private work folder, verified through the runtime's own
loader, benchmarked when the host can run the target, and the selected one is written
to ``OUTDIR/<target>/`` atomically. A target that fails leaves nothing in OUTDIR.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from neofleet.bundle import Bundle, write_bundle
from neofleet.bundle.meta import Benchmark, CandidateReport, Verification
from neofleet.compiler.backends import (
    BACKEND_NAMES,
    Artifact,
    BuildOptions,
    make_backend,
    preflight,
)
from neofleet.compiler.backends.base import Progress
from neofleet.compiler.errors import BackendUnavailableError, CompileError, VerificationError
from neofleet.compiler.ingest import SourceModel, load_model
from neofleet.compiler.inputs import InputDecl
from neofleet.compiler.metadata import compiled_meta
from neofleet.compiler.select import (
    CandidateOutcome,
    crossover_rows,
    note_skipped,
    select_candidate,
)
from neofleet.compiler.targets import Target, get_target, host_arch, host_can_run, with_cores
from neofleet.compiler.verify import (
    Tolerance,
    benchmark_bundles,
    time_variants,
    verify_bundle,
)


def default_tuning_db() -> Path:
    env = os.environ.get("NEOFLEET_TUNING_DB")
    return Path(env) if env else Path.home() / ".cache" / "neofleet" / "tuning"


@dataclass(frozen=True)
class CompileRequest:
    model: Path
    framework: str
    inputs: Sequence[InputDecl]
    targets: Sequence[str]
    output: Path
    backend: str = "auto"
    tuning_trials: int = 0
    tuning_db: Path | None = field(default_factory=default_tuning_db)
    tolerance: Tolerance = field(default_factory=Tolerance)
    sample_data: Path | None = None
    toolchain_timeout_s: float = 900.0
    progress: Progress = field(default=lambda _: None)
    compiler_options: Mapping[str, str] = field(default_factory=dict)


@dataclass
class TargetResult:
    target: str
    bundle: Bundle | None = None
    error: CompileError | None = None

    def to_json(self) -> dict[str, Any]:
        if self.bundle is None:
            assert self.error is not None
            return {"target": self.target, "status": "Failed", "reason": self.error.reason,
                    "message": str(self.error)}
        meta = self.bundle.meta.neofleet
        return {"target": self.target, "status": "Succeeded", "bundle": str(self.bundle.path),
                "digest": self.bundle.digest, "backend": meta.backend,
                "compiler": meta.compiler,
                "verification": meta.verification.model_dump(mode="json"),
                "benchmark": meta.benchmark.model_dump(mode="json") if meta.benchmark else None,
                "selection": meta.selection.model_dump(mode="json") if meta.selection else None}


@dataclass
class CompileResult:
    framework: str
    model_sha256: str
    targets: list[TargetResult]

    @property
    def ok(self) -> bool:
        return all(t.bundle is not None for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {"model": {"framework": self.framework, "sha256": self.model_sha256},
                "ok": self.ok, "targets": [t.to_json() for t in self.targets]}


def compile_model(request: CompileRequest) -> CompileResult:
    if request.backend != "auto":
        preflight(request.backend)  # e.g. tensorrt not installed: fail before loading
    targets = [_buildable(get_target(name)) for name in request.targets]
    if not targets:
        raise CompileError("give at least one --target")
    with tempfile.TemporaryDirectory(prefix="neofleet-compile-") as tmp:
        work = Path(tmp)
        request.progress(f"loading {request.model.name} ({request.framework})")
        source = load_model(request.model, request.framework, request.inputs, work / "source",
                            sample_data=request.sample_data)
        results = [_compile_target(source, target, request, work / target.name)
                   for target in targets]
    return CompileResult(framework=source.framework, model_sha256=source.sha256, targets=results)


def _buildable(target: Target) -> Target:
    if not target.buildable:
        raise BackendUnavailableError(f"target {target.name} ({target.description}) is in the "
                                      "catalogue but GPU bundles are not built by this version")
    return target


def backends_for(target: Target, requested: str) -> list[str]:
    if requested == "auto":
        return list(target.backends)
    if requested not in BACKEND_NAMES:
        raise BackendUnavailableError(f"unknown backend {requested!r}; use auto or one of "
                                      f"{', '.join(BACKEND_NAMES)}")
    return [requested]


def _compile_target(source: SourceModel, target: Target, request: CompileRequest,
                    work: Path) -> TargetResult:
    start = time.perf_counter()
    runs_here = host_can_run(target)
    if runs_here:
        target = with_cores(target, os.cpu_count() or 1)
    try:
        _check_verifiable(target, runs_here)
        names = backends_for(target, request.backend)
        built, reports = _build_candidates(source, target, names, request, work, runs_here)
        winner, selection = select_candidate([o for _, o in built], runs_here)
        selection = note_skipped(selection, winner.backend, names, reports)
        artifact = next(a for a, o in built if o is winner)
        reports = [_mark_selected(r, winner.backend) for r in reports]
        meta = compiled_meta(source, target, artifact, winner.verification, winner.benchmark,
                             reports, selection, time.perf_counter() - start)
        bundle = write_bundle(request.output / target.name, files=artifact.files,
                              artifact=artifact.artifact, backend=artifact.backend, meta=meta,
                              graph=_graph(artifact, source))
        request.progress(f"[{target.name}] wrote {bundle.path} ({winner.backend}, "
                         f"{selection.rule})")
        return TargetResult(target=target.name, bundle=bundle)
    except CompileError as exc:
        request.progress(f"[{target.name}] failed: {exc}")
        return TargetResult(target=target.name, error=exc)


def _check_verifiable(target: Target, runs_here: bool) -> None:
    if target.device_type == "gpu":
        return  # verified on this host's GPU, or recorded as not run (gpu_verify)
    if not runs_here and not (target.arch == "aarch64" and host_arch() == "x86_64"):
        raise VerificationError(f"this host can neither run nor emulate target {target.name} "
                                f"(needs {', '.join(target.cpu_features) or target.arch}); "
                                "compile it on a host that has those features")


@dataclass
class _Candidate:
    artifact: Artifact
    bundle_dir: Path
    verification: Verification


def _build_candidates(
    source: SourceModel, target: Target, names: list[str], request: CompileRequest,
    work: Path, runs_here: bool,
) -> tuple[list[tuple[Artifact, CandidateOutcome]], list[CandidateReport]]:
    """Build and verify every applicable backend, then time the verified ones."""
    options = BuildOptions(tuning_trials=request.tuning_trials, tuning_db_root=request.tuning_db,
                           host_can_run=runs_here, progress=request.progress,
                           toolchain_timeout_s=request.toolchain_timeout_s,
                           compiler_options=dict(request.compiler_options))
    built: dict[str, _Candidate] = {}
    errors: dict[str, CompileError] = {}
    skipped: list[CandidateReport] = []
    for name in names:
        backend = make_backend(name)
        reason = backend.not_applicable(source, target)
        if reason:
            skipped.append(CandidateReport(backend=name, status="not-applicable", message=reason))
            continue
        try:
            built[name] = _build_and_verify(backend, source, target, request, work / name,
                                            options)
        except CompileError as exc:
            request.progress(f"[{target.name}] {name}: {exc}")
            errors[name] = exc
    if not built and len(errors) == 1:
        raise next(iter(errors.values()))  # the one applicable backend failed: say how
    if not built and not errors:
        raise BackendUnavailableError("no backend applies to this model and target: " + "; ".join(
            f"{r.backend}: {r.message}" for r in skipped))
    benchmarks = _benchmark(built, source, target, work, request) if runs_here else {}
    outcomes = [(c.artifact, CandidateOutcome(name, c.verification, benchmarks.get(name),
                                              fully_tuned=_fully_tuned(c.artifact)))
                for name, c in built.items()]
    failed = [CandidateOutcome(name, None, None, error=str(exc)) for name, exc in errors.items()]
    reports = skipped + [_report(o, a) for a, o in outcomes] + [_report(o, None) for o in failed]
    return outcomes, reports


def _build_and_verify(backend: Any, source: SourceModel, target: Target,
                      request: CompileRequest, work: Path, options: BuildOptions) -> _Candidate:
    progress = request.progress
    progress(f"[{target.name}] {backend.name}: building")
    artifact = backend.build(source, target, _mkdir(work / "build"), options)
    _attach_warmup(artifact, source, work)
    if target.device_type == "gpu":
        from neofleet.compiler.gpu_verify import attach_samples

        attach_samples(artifact, source, request.tolerance, work / "samples")
    pending = Verification(passed=False, method="not-run", samples=0,
                           rtol=request.tolerance.rtol, atol=request.tolerance.atol,
                           message="pending")
    meta = compiled_meta(source, target, artifact, pending, None, [], None, 0.0)
    provisional = write_bundle(work / "bundle", files=artifact.files, artifact=artifact.artifact,
                               backend=artifact.backend, meta=meta, graph=_graph(artifact, source))
    if target.device_type == "gpu":
        from neofleet.compiler.gpu_verify import verify_gpu_candidate

        verification = verify_gpu_candidate(provisional.path, source, target, request.tolerance,
                                            work)
        progress(f"[{target.name}] {backend.name}: "
                 + (verification.message or "verified on this host's GPU"))
        return _Candidate(artifact, provisional.path, verification)
    how = "on this host" if options.host_can_run else "under qemu-aarch64"
    variants: list[str | None] = list(artifact.options.get("variants") or [None])
    progress(f"[{target.name}] {backend.name}: verifying {how}"
             + (f" ({', '.join(map(str, variants))} paths)" if len(variants) > 1 else ""))
    verification = verify_bundle(provisional.path, source, request.tolerance, work,
                                 emulate=not options.host_can_run, variants=variants)
    if not verification.passed:
        progress(f"[{target.name}] {backend.name}: verification failed: {verification.message}")
    elif len(variants) > 1 and options.host_can_run:
        _measure_crossover(artifact, provisional.path, source, target, work, progress)
    return _Candidate(artifact, provisional.path, verification)


def _attach_warmup(artifact: Artifact, source: SourceModel, work: Path) -> None:
    """The sample the candidate is verified on first, as ``warmup.npz``: ``neofleet serve``
    warms up on it instead of zeros, which are no valid input for every model (tree
    models take any rows, zeros included, and carry none)."""
    if source.tree_model is not None:
        return
    from neofleet.runtime.probe import save_arrays
    from neofleet.runtime.samples import WARMUP_NAME

    path = _mkdir(work / "warmup") / WARMUP_NAME
    save_arrays(path, source.sample_inputs(0))
    artifact.files[WARMUP_NAME] = path
    artifact.options["warmup_inputs"] = WARMUP_NAME


def _measure_crossover(artifact: Artifact, bundle_dir: Path, source: SourceModel,
                       target: Target, work: Path, progress: Progress) -> None:
    """Time each path over row counts and record from how many rows the second wins."""
    progress(f"[{target.name}] {artifact.backend}: timing the "
             f"{' and '.join(artifact.options['variants'])} paths over batch sizes")
    timings = time_variants(bundle_dir, artifact.options["variants"], source, work,
                            threads=target.num_cores or 1)
    rows, reason = crossover_rows(timings)
    artifact.options.update(crossover_rows=rows, crossover=reason, path_timings_ms=timings)
    progress(f"[{target.name}] {artifact.backend}: {reason}")


def _benchmark(built: dict[str, _Candidate], source: SourceModel, target: Target, work: Path,
               request: CompileRequest) -> dict[str, Benchmark]:
    verified = {name: c.bundle_dir for name, c in built.items() if c.verification.passed}
    if not verified:
        return {}
    request.progress(f"[{target.name}] benchmarking {', '.join(verified)} on this host "
                     "(interleaved rounds)")
    return benchmark_bundles(verified, source, work, threads=target.num_cores or 1)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fully_tuned(artifact: Artifact) -> bool:
    tuning: dict[str, int] = artifact.options.get("tuning") or {}
    tasks = tuning.get("tasks", 0)
    return tasks > 0 and tuning.get("reused_tasks", 0) + tuning.get("tuned_tasks", 0) == tasks


def _report(outcome: CandidateOutcome, artifact: Artifact | None) -> CandidateReport:
    status: Literal["verified", "unverified", "failed"] = (
        "verified" if outcome.verified else "unverified" if outcome.deferred else "failed")
    message = outcome.error or (outcome.verification.message if outcome.verification else "")
    return CandidateReport(backend=outcome.backend, status=status, message=message,
                           build_seconds=artifact.build_seconds if artifact else None,
                           verification=outcome.verification, benchmark=outcome.benchmark)


def _mark_selected(report: CandidateReport, backend: str) -> CandidateReport:
    if report.backend == backend and report.status in ("verified", "unverified"):
        return report.model_copy(update={"status": "selected"})
    return report


def _graph(artifact: Artifact, source: SourceModel) -> dict[str, Any]:
    return {**artifact.graph,
            "inputs": [s.model_dump() for s in source.inputs],
            "outputs": [s.model_dump() for s in source.outputs]}
