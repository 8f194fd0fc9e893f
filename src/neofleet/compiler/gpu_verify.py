"""Verification of GPU candidates.

Every GPU candidate gets the verification samples (seeded inputs and the reference's
outputs, ``verification.npz``) added to its files, so the runtime can check it on the
target GPU. When this host has a GPU that can run the candidate's kernels, the candidate
is verified there like a CPU candidate on the host (``method: gpu``,
``hardware_verified: true``). Otherwise nothing is run: the verification says so
plainly (``passed: false``, ``method: not-run-no-gpu``, ``hardware_verified: false``,
and a message naming the GPU it needs and what this host has); selection may still keep
such a candidate (rule ``built-not-verified``), and ``neofleet serve`` runs the samples on
the GPU before it reports ready.
"""

from __future__ import annotations

from pathlib import Path

from neofleet.bundle.meta import NOT_RUN_NO_GPU, Verification
from neofleet.compiler.backends.base import Artifact
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target
from neofleet.compiler.verify import Tolerance, verify_bundle
from neofleet.runtime.gpu import GpuRequirement, HostGpus, detect_gpus, gpu_mismatch
from neofleet.runtime.samples import SAMPLES_NAME, write_samples


def attach_samples(artifact: Artifact, source: SourceModel, tol: Tolerance,
                   workdir: Path) -> None:
    """Add ``verification.npz`` (tol.samples seeded inputs and reference outputs)."""
    samples = [source.sample_inputs(seed)
               for seed in range(source.verification_count(tol.samples))]
    references = [source.reference(sample) for sample in samples]
    workdir.mkdir(parents=True, exist_ok=True)
    artifact.files[SAMPLES_NAME] = write_samples(workdir / SAMPLES_NAME, samples, references)
    artifact.options["verification_samples"] = SAMPLES_NAME


def requirement(target: Target) -> GpuRequirement:
    cc = target.compute_capability or ""
    arch = target.cuda.arch if target.cuda else "sm_" + cc.replace(".", "")
    return GpuRequirement(target=target.name, arch=arch, compute_capability=cc,
                          gpu_kind=target.description)


def gpu_here(target: Target, host: HostGpus | None = None) -> str | None:
    """None when GPU 0 of this host runs ``target``'s kernels, else why not."""
    return gpu_mismatch(requirement(target), detect_gpus() if host is None else host, 0)


def verify_gpu_candidate(bundle_dir: Path, source: SourceModel, target: Target,
                         tol: Tolerance, workdir: Path) -> Verification:
    host = detect_gpus()
    if gpu_here(target, host) is None:
        result = verify_bundle(bundle_dir, source, tol, workdir, emulate=False, dev_type="gpu")
        return result.model_copy(update={"hardware_verified": result.passed})
    return not_run(target, tol, host)


def not_run(target: Target, tol: Tolerance, host: HostGpus) -> Verification:
    need = requirement(target)
    return Verification(
        passed=False, method=NOT_RUN_NO_GPU, samples=tol.samples, rtol=tol.rtol,
        atol=tol.atol, hardware_verified=False,
        message=(f"built for {need.arch} (compute capability {need.compute_capability}) but "
                 f"NOT verified on hardware: this host has {host.describe()}. The bundle "
                 f"carries {tol.samples} verification samples ({SAMPLES_NAME}: inputs and "
                 "reference outputs); neofleet serve runs them on the target GPU before it "
                 "reports ready and exits 1 if they do not match"))
