"""tvm-cuda: CUDA bundles built here with the real TVM and nvcc (no GPU needed), their
metadata and verification samples, and the runtime's refusal on a host without the GPU.
Tests that need the GPU itself are skipped with the reason where there is none."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle import open_bundle
from neofleet.bundle.meta import NOT_RUN_NO_GPU
from neofleet.compiler.errors import BackendUnavailableError
from neofleet.compiler.pipeline import CompileRequest, CompileResult, compile_model
from neofleet.runtime import DLRModel
from neofleet.runtime.errors import IncompatibleBundleError
from neofleet.runtime.gpu import detect_gpus
from neofleet.runtime.samples import read_samples
from tests.conftest import EXAMPLE_ONNX, make_mlp_onnx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not found"),
]

GPU_HOST = detect_gpus()
FILES = {"compiled.so", "libtvm_runtime.so", "libtvm_runtime_cuda.so", "verification.npz",
         "warmup.npz",
         "compiled.meta", "compiled_model.json", "manifest.json"}


def _compile(model: Path, targets: list[str], out: Path, inputs: tuple[str, ...] = (),
             tuning_trials: int = 0) -> CompileResult:
    from neofleet.compiler.inputs import parse_input_decl

    return compile_model(CompileRequest(
        model=model, framework="onnx", inputs=[parse_input_decl(i) for i in inputs],
        targets=targets, output=out, backend="tvm-cuda", tuning_trials=tuning_trials,
        tuning_db=out.parent / "db"))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompileResult]:
    root = tmp_path_factory.mktemp("tvm-cuda")
    model = make_mlp_onnx(root / "mlp.onnx", batch=2)
    return model, _compile(model, ["nvidia-t4", "nvidia-h100"], root / "out")


def _nvcc_release() -> str:
    text = subprocess.run(["nvcc", "--version"], capture_output=True, text=True,
                          check=True).stdout
    match = re.search(r"release (\d+\.\d+)", text)
    assert match
    return match[1]


def _ort(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feeds)]


@pytest.mark.parametrize(("index", "name", "arch", "cc"), [
    (0, "nvidia-t4", "sm_75", "7.5"), (1, "nvidia-h100", "sm_90a", "9.0")])
def test_cuda_bundle_is_built_with_its_metadata(mlp: tuple[Path, CompileResult], index: int,
                                                name: str, arch: str, cc: str) -> None:
    _, result = mlp
    assert result.ok, [t.error for t in result.targets]
    bundle = result.targets[index].bundle
    assert bundle is not None and bundle.path.name == name
    assert {p.name for p in bundle.path.iterdir()} == FILES
    opened = open_bundle(bundle.path)  # every digest checked
    for file, entry in opened.manifest.files.items():
        assert hashlib.sha256((bundle.path / file).read_bytes()).hexdigest() == entry.sha256
    assert opened.manifest.backend == "tvm-cuda" and opened.manifest.artifact == "compiled.so"
    meta = opened.meta
    assert (meta.requirements.target_device, meta.requirements.target_device_type,
            meta.requirements.target_arch) == (name, "gpu", "x86_64")
    section = meta.neofleet
    cuda = section.backend_options["cuda"]
    assert cuda["arch"] == arch and cuda["compute_capability"] == cc
    assert cuda["cuda_version"] == _nvcc_release() == section.compiler["cuda"]
    assert cuda["cudart"] == "libcudart.so.13" and cuda["min_driver"] == "580"
    assert section.backend_options["tvm_tag"] == f"nvidia/{name}"
    assert section.backend_options["tvm_target"]["kind"] == "cuda"
    assert "dlight" in section.backend_options["schedules"]
    assert section.target["compute_capability"] == cc
    v = section.verification
    assert (v.passed, v.method, v.hardware_verified) == (False, NOT_RUN_NO_GPU, False) \
        or GPU_HOST.gpus
    if not GPU_HOST.gpus:
        assert "NOT verified on hardware" in v.message and "no NVIDIA GPU" in v.message
        assert section.selection is not None
        assert section.selection.rule == "built-not-verified"
        assert [c.status for c in section.candidates] == ["selected"]
    graph = json.loads((bundle.path / "compiled_model.json").read_text())
    assert graph["backend"] == "tvm-cuda" and graph["kernels"] >= 1
    # the kernels are machine code for the preset's GPU, embedded next to the host code
    data = (bundle.path / "compiled.so").read_bytes()
    assert (0xBA55ED50).to_bytes(4, "little") in data  # a fatbin
    assert _cuda_elf_sms(data) == [int(arch[3:5])]  # one cubin, for that SM (no PTX)
    assert b'extern "C" __global__' not in data  # not the CUDA source left to JIT
    assert section.backend_options["cuda"]["build_host_driver"]


def _cuda_elf_sms(data: bytes) -> list[int]:
    """The SM of every CUDA ELF (cubin, e_machine 190) inside ``data``."""
    import struct

    sms, at = [], data.find(b"\x7fELF", 1)
    while at != -1:
        if struct.unpack_from("<H", data, at + 18)[0] == 190:
            sms.append((struct.unpack_from("<I", data, at + 48)[0] >> 8) & 0xFF)
        at = data.find(b"\x7fELF", at + 1)
    return sms


def test_verification_samples_hold_inputs_and_onnxruntime_outputs(
        mlp: tuple[Path, CompileResult]) -> None:
    model, result = mlp
    bundle = result.targets[0].bundle
    assert bundle is not None
    raw = (bundle.path / "verification.npz").read_bytes()
    samples = read_samples(raw)  # np.load(..., allow_pickle=False): plain arrays only
    assert len(samples) == bundle.meta.neofleet.verification.samples == 3
    for sample in samples:
        assert set(sample.inputs) == {"x"} and sample.inputs["x"].shape == (2, 16)
        expected = _ort(model, sample.inputs)
        np.testing.assert_allclose(sample.reference[0], expected[0], rtol=1e-6, atol=1e-6)
    assert bundle.meta.neofleet.backend_options["verification_samples"] == "verification.npz"


@pytest.mark.skipif(bool(GPU_HOST.gpus), reason="this host has an NVIDIA GPU")
def test_runtime_refuses_cuda_bundles_on_this_cpu_only_host(
        mlp: tuple[Path, CompileResult]) -> None:
    _, result = mlp
    for target, arch, cc in (result.targets[0], "sm_75", "7.5"), (result.targets[1], "sm_90a",
                                                                   "9.0"):
        assert target.bundle is not None
        path = target.bundle.path
        with pytest.raises(IncompatibleBundleError) as gpu:
            DLRModel(path, "gpu")
        for part in (target.target, arch, f"compute capability {cc}", "no NVIDIA GPU",
                     "libcuda.so.1"):
            assert part in str(gpu.value)
        with pytest.raises(IncompatibleBundleError, match=r"dev_type='gpu'.*no CPU fallback"):
            DLRModel(path, "cpu")


@pytest.mark.skipif(bool(GPU_HOST.gpus), reason="this host has an NVIDIA GPU")
def test_serve_refuses_a_cuda_bundle_before_opening_its_port(
        mlp: tuple[Path, CompileResult], tmp_path: Path) -> None:
    _, result = mlp
    bundle = result.targets[0].bundle
    assert bundle is not None
    env = {**os.environ, "NEOFLEET_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "neofleet.cli", "serve", str(bundle.path),
                           "--host", "127.0.0.1", "--port", "1"], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert done.returncode == 1
    assert "neofleet: IncompatibleBundle:" in done.stderr
    assert "nvidia-t4" in done.stderr and "sm_75" in done.stderr


def test_tuning_is_refused_without_a_gpu(tmp_path: Path) -> None:
    if GPU_HOST.gpus:
        pytest.skip("this host has an NVIDIA GPU")
    model = make_mlp_onnx(tmp_path / "mlp.onnx")
    result = _compile(model, ["nvidia-t4"], tmp_path / "out", tuning_trials=8)
    error = result.targets[0].error
    assert isinstance(error, BackendUnavailableError)
    assert "needs a sm_75 GPU on the compile host" in str(error)
    assert not (tmp_path / "out" / "nvidia-t4").exists()


@pytest.mark.parametrize(("name", "why"), [("jetson-nano", "sm_53"),
                                           ("jetson-xavier", "sm_72"),
                                           ("jetson-orin-nano", "libcudart.so.13")])
def test_jetson_builds_are_refused_with_the_reason(tmp_path: Path, name: str, why: str) -> None:
    result = _compile(make_mlp_onnx(tmp_path / "mlp.onnx"), [name], tmp_path / "out")
    error = result.targets[0].error
    assert isinstance(error, BackendUnavailableError)
    assert why in str(error) and "tvm-cuda" in str(error)
    assert not (tmp_path / "out" / name).exists()


def test_catalogue_cuda_values_match_tvms_own_tags() -> None:
    import tvm

    from neofleet.compiler.targets import CATALOGUE

    for preset in (t for t in CATALOGUE if t.cuda is not None):
        assert preset.cuda.tvm_tag is not None
        tagged = tvm.target.Target(preset.cuda.tvm_tag).export()
        ours = tvm.target.Target(preset.tvm_target()).export()
        for key in ("kind", "arch", "max_shared_memory_per_block", "max_threads_per_block",
                    "thread_warp_size", "registers_per_block", "l2_cache_size_bytes"):
            assert str(ours.get(key)) == str(tagged.get(key)), (preset.name, key)


def test_a_conv_model_compiles_for_cuda(tmp_path: Path) -> None:
    result = _compile(EXAMPLE_ONNX, ["nvidia-a100"], tmp_path / "out")
    assert result.ok, result.targets[0].error
    bundle = result.targets[0].bundle
    assert bundle is not None
    assert bundle.meta.neofleet.backend_options["cuda"]["arch"] == "sm_80"
    assert len(read_samples((bundle.path / "verification.npz").read_bytes())) == 3


def _matching(arch: str) -> str | None:
    from neofleet.runtime.gpu import kernels_run_on

    gpu = next((g for g in GPU_HOST.gpus if kernels_run_on(arch, g.compute_capability)), None)
    return None if gpu else f"needs a GPU that runs {arch} kernels; this host has " \
                            f"{GPU_HOST.describe()}"


@pytest.mark.skipif(_matching("sm_90a") is not None, reason=str(_matching("sm_90a")))
def test_h100_bundle_runs_on_the_gpu_and_matches_onnxruntime(
        mlp: tuple[Path, CompileResult]) -> None:
    model, result = mlp
    bundle = result.targets[1].bundle
    assert bundle is not None
    assert bundle.meta.neofleet.verification.hardware_verified is True
    x = np.random.default_rng(7).standard_normal((2, 16)).astype(np.float32)
    out = DLRModel(bundle.path, "gpu").run({"x": x})[0]
    np.testing.assert_allclose(out, _ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(bool(GPU_HOST.gpus), reason="this host has an NVIDIA GPU")
def test_gpu_bench_stops_with_a_clear_message_without_a_gpu() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert "gpu_bench: cannot run: this benchmark needs an NVIDIA GPU" in done.stderr
    assert "libcuda.so.1 not found" in done.stderr


def test_device_copier_round_trips_through_tvm_runtime_tensors() -> None:
    """The copies the GPU backend makes, exercised on the CPU device (same functions)."""
    from neofleet.runtime.backends.tvm import TvmRequirements, load_runtime_library
    from neofleet.runtime.backends.tvm_cuda import DeviceCopier

    load_runtime_library(TvmRequirements(None, None, None))
    copier = DeviceCopier("cpu", 0)
    for array in (np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                  np.arange(5, dtype=np.int64), np.ones((3, 1), dtype=np.float16)):
        tensor = copier.to_device(array)
        assert tuple(tensor.shape) == array.shape
        back = copier.to_host(tensor)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)
