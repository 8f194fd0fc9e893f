"""GPU presets, the CUDA compatibility rule, deferred verification and the bundle's
verification samples: pure logic, no GPU, no TVM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle.meta import NOT_RUN_NO_GPU, Verification
from neofleet.compiler.backends.tvm_cuda import cuda_build_blocker
from neofleet.compiler.gpu_verify import gpu_here, not_run
from neofleet.compiler.select import CandidateOutcome, select_candidate
from neofleet.compiler.targets import CATALOGUE, get_target
from neofleet.compiler.verify import Tolerance
from neofleet.runtime.errors import HardwareVerificationError, IncompatibleBundleError
from neofleet.runtime.gpu import (
    GpuInfo,
    GpuRequirement,
    HostGpus,
    check_gpu_bundle,
    gpu_mismatch,
    kernels_run_on,
    parse_cuda_arch,
)
from neofleet.runtime.samples import check_samples, read_samples, write_samples

GPU_PRESETS = {"nvidia-t4": ("sm_75", "7.5", "nvidia/nvidia-t4"),
               "nvidia-a100": ("sm_80", "8.0", "nvidia/nvidia-a100"),
               "nvidia-h100": ("sm_90a", "9.0", "nvidia/nvidia-h100"),
               "jetson-nano": ("sm_53", "5.3", "nvidia/jetson-nano"),
               "jetson-xavier": ("sm_72", "7.2", "nvidia/jetson-agx-xavier"),
               "jetson-orin-nano": ("sm_87", "8.7", "nvidia/jetson-orin-nano")}
# `nvcc --list-gpu-arch` of CUDA 13.0
CUDA13_ARCHS = frozenset(f"compute_{n}" for n in (75, 80, 86, 87, 88, 89, 90, 100, 110, 103,
                                                   120, 121))
NO_GPU = HostGpus(problem="libcuda.so.1 not found: no NVIDIA driver on this host")
H100_HOST = HostGpus((GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0)),), "13.0")
A10_HOST = HostGpus((GpuInfo(0, "NVIDIA A10", (8, 6)),), "13.0")


@pytest.mark.parametrize(("name", "expected"), sorted(GPU_PRESETS.items()))
def test_gpu_presets_follow_tvm_tags(name: str, expected: tuple[str, str, str]) -> None:
    target = get_target(name)
    arch, cc, tag = expected
    assert target.device_type == "gpu" and target.buildable
    assert target.cuda is not None and target.cuda.arch == arch and target.cuda.tvm_tag == tag
    assert target.compute_capability == cc and target.cuda_version and target.trt_version
    assert "tvm-cuda" in target.backends
    tvm_target = target.tvm_target()
    assert tvm_target["kind"] == "cuda" and tvm_target["arch"] == arch
    assert tvm_target["host"]["kind"] == "llvm"
    if target.arch == "aarch64":
        assert tvm_target["host"]["mtriple"] == "aarch64-linux-gnu"
    assert target.descriptor()["cuda"]["tvm_tag"] == tag


def test_t4_target_dict_is_tvms_tag() -> None:
    assert get_target("nvidia-t4").tvm_target() == {
        "kind": "cuda", "arch": "sm_75", "max_shared_memory_per_block": 49152,
        "max_threads_per_block": 1024, "thread_warp_size": 32, "registers_per_block": 65536,
        "host": {"kind": "llvm"}}


def test_every_gpu_preset_has_a_cuda_spec() -> None:
    assert {t.name for t in CATALOGUE if t.device_type == "gpu"} == set(GPU_PRESETS)


@pytest.mark.parametrize(("arch", "cc", "runs"), [
    ("sm_75", (7, 5), True), ("sm_75", (8, 0), False), ("sm_80", (8, 6), True),
    ("sm_80", (8, 0), True), ("sm_86", (8, 0), False), ("sm_90a", (9, 0), True),
    ("sm_90", (9, 0), True), ("sm_90a", (10, 0), False), ("sm_120", (12, 0), True),
])
def test_cuda_binary_compatibility(arch: str, cc: tuple[int, int], runs: bool) -> None:
    assert kernels_run_on(arch, cc) is runs


def test_parse_cuda_arch() -> None:
    assert parse_cuda_arch("sm_90a") == (9, 0, True)
    assert parse_cuda_arch("sm_120") == (12, 0, False)
    with pytest.raises(IncompatibleBundleError):
        parse_cuda_arch("compute_75")


def _t4() -> GpuRequirement:
    return GpuRequirement("nvidia-t4", "sm_75", "7.5", "NVIDIA T4 (Turing, sm_75) on x86-64")


def test_mismatch_names_the_bundle_gpu_and_what_the_host_has() -> None:
    no_gpu = gpu_mismatch(_t4(), NO_GPU, 0)
    assert no_gpu is not None
    for part in ("nvidia-t4", "sm_75", "compute capability 7.5", "no NVIDIA GPU",
                 "libcuda.so.1 not found", "never fall back to the CPU"):
        assert part in no_gpu
    other = gpu_mismatch(_t4(), A10_HOST, 0)
    assert other is not None and "NVIDIA A10 (compute capability 8.6)" in other
    assert "cannot run sm_75 kernels" in other
    assert gpu_mismatch(_t4(), A10_HOST, 3) is not None  # no GPU 3
    h100 = GpuRequirement("nvidia-h100", "sm_90a", "9.0", "H100")
    assert gpu_mismatch(h100, H100_HOST, 0) is None


def test_check_gpu_bundle_refuses_cpu_dev_type() -> None:
    from neofleet.bundle.meta import Requirements
    from tests.support.bundles import make_meta

    meta = make_meta(backend="tvm-cuda")
    meta = meta.model_copy(update={"requirements": Requirements(
        target_device="nvidia-t4", target_device_type="gpu", target_arch="x86_64"),
        "neofleet": meta.neofleet.model_copy(update={
        "target": get_target("nvidia-t4").descriptor(),
        "backend_options": {"cuda": {"arch": "sm_75"}}})})
    with pytest.raises(IncompatibleBundleError, match=r"nvidia-t4.*sm_75.*dev_type='gpu'.*"
                                                      r"no CPU fallback.*no NVIDIA GPU"):
        check_gpu_bundle(meta, "cpu", 0, host=NO_GPU)
    with pytest.raises(IncompatibleBundleError, match=r"compute capability 7.5.*no NVIDIA GPU"):
        check_gpu_bundle(meta, "gpu", 0, host=NO_GPU)
    check_gpu_bundle(meta, "gpu", 0, host=HostGpus((GpuInfo(0, "Tesla T4", (7, 5)),)))


def test_cuda_build_blocker_refuses_jetsons_and_says_why() -> None:
    for name in ("nvidia-t4", "nvidia-a100", "nvidia-h100"):
        assert cuda_build_blocker(get_target(name), CUDA13_ARCHS, "x86_64") is None
    nano = cuda_build_blocker(get_target("jetson-nano"), CUDA13_ARCHS, "x86_64")
    assert nano is not None and "sm_53" in nano and "compute_75" in nano
    xavier = cuda_build_blocker(get_target("jetson-xavier"), CUDA13_ARCHS, "x86_64")
    assert xavier is not None and "sm_72" in xavier
    orin = cuda_build_blocker(get_target("jetson-orin-nano"), CUDA13_ARCHS, "x86_64")
    assert orin is not None and "libcudart.so.13" in orin and "12.2" in orin
    cross = cuda_build_blocker(get_target("nvidia-t4"), CUDA13_ARCHS, "aarch64")
    assert cross is not None and "x86_64" in cross


def test_not_run_verification_is_plain_about_it() -> None:
    target = get_target("nvidia-t4")
    assert gpu_here(target, NO_GPU) is not None
    assert gpu_here(target, HostGpus((GpuInfo(0, "Tesla T4", (7, 5)),))) is None
    v = not_run(target, Tolerance(samples=3), NO_GPU)
    assert (v.passed, v.method, v.hardware_verified, v.samples) == (False, NOT_RUN_NO_GPU,
                                                                   False, 3)
    assert "NOT verified on hardware" in v.message and "verification.npz" in v.message


def _verification(passed: bool, method: str) -> Verification:
    return Verification(passed=passed, method=method, samples=3, rtol=1e-3, atol=1e-4)


def test_select_keeps_a_deferred_gpu_candidate_but_prefers_a_verified_one() -> None:
    deferred = CandidateOutcome("tvm-cuda", _verification(False, NOT_RUN_NO_GPU), None)
    failed = CandidateOutcome("tensorrt", None, None, error="tensorrt does not import")
    winner, selection = select_candidate([failed, deferred], host_can_run=False)
    assert winner is deferred and selection.rule == "built-not-verified"
    verified = CandidateOutcome("tensorrt", _verification(True, "gpu"), None)
    winner, selection = select_candidate([deferred, verified], host_can_run=False)
    assert winner is verified and selection.rule != "built-not-verified"


class _Model:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [inputs["x"] * self.scale, (inputs["x"] > 0).astype(np.int64)]


def test_samples_round_trip_and_check(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(3)]
    refs = [_Model(2.0).run(s) for s in samples]
    path = write_samples(tmp_path / "verification.npz", samples, refs)
    read = read_samples(path.read_bytes())
    assert len(read) == 3
    np.testing.assert_array_equal(read[1].inputs["x"], samples[1]["x"])
    assert [r.dtype for r in read[0].reference] == [np.float32, np.int64]
    report = check_samples(_Model(2.0), read, rtol=1e-3, atol=1e-4)
    assert report.samples == 3 and report.max_abs_error == 0.0
    with pytest.raises(HardwareVerificationError, match="sample 0, output 0 differs"):
        check_samples(_Model(2.1), read, rtol=1e-3, atol=1e-4)


def test_an_old_driver_is_refused_with_both_versions() -> None:
    from neofleet.runtime.backends.tvm_cuda import check_driver

    check_driver("libcudart.so.13", "13.0")
    check_driver("libcudart.so.13", None)  # unknown: the loader will say
    with pytest.raises(IncompatibleBundleError, match=r"CUDA 13 runtime.*up to 12.4"):
        check_driver("libcudart.so.13", "12.4")
