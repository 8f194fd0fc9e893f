"""The tensorrt backend where TensorRT is absent (the common case here): the compiler fails
at once with a clear error, the runtime refuses tensorrt bundles naming both sides, and the
pure parts (options, optimization profiles, applicability, version rules) are checked
directly. Tests that need TensorRT itself are in tests/integration/test_tensorrt_gpu.py."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from neofleet.bundle.meta import CandidateReport, CompiledMeta, TensorSpec
from neofleet.compiler.backends import BACKEND_NAMES, make_backend
from neofleet.compiler.backends.tensorrt import (
    NOT_INSTALLED,
    ProfileShapes,
    TrtOptions,
    build_blocker,
    parse_options,
    plan_profiles,
)
from neofleet.compiler.errors import (
    BackendBuildError,
    BackendUnavailableError,
    CompilerOptionsError,
)
from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.compiler.select import CandidateOutcome, note_skipped, select_candidate
from neofleet.compiler.targets import CATALOGUE, get_target
from neofleet.runtime.backends.tensorrt import (
    EngineRequirements,
    HostFacts,
    check_host,
    same_trt_release,
    version_prefix_matches,
)
from neofleet.runtime.errors import BackendUnavailableError as RuntimeBackendUnavailable
from neofleet.runtime.errors import IncompatibleBundleError
from neofleet.runtime.gpu import GpuInfo, HostGpus
from tests.support.bundles import make_bundle, make_meta

ROOT = Path(__file__).resolve().parents[2]


def _tensorrt_imports() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


needs_no_tensorrt = pytest.mark.skipif(
    _tensorrt_imports(), reason="TensorRT imports on this host: the fail-fast path cannot run")

NO_GPU = HostGpus(problem="libcuda.so.1 not found: no NVIDIA driver on this host")


def _host(trt: str | None = "10.0.1.6", cc: tuple[int, int] | None = (7, 5)) -> HostFacts:
    gpus = HostGpus((GpuInfo(0, "Tesla T4", cc),), "12.2") if cc else NO_GPU
    return HostFacts(trt, "" if trt else "ModuleNotFoundError: No module named 'tensorrt'", gpus,
                     "12.2")


# --------------------------------------------------------------------------- compiler


@needs_no_tensorrt
def test_compiling_for_tensorrt_fails_at_once_naming_the_gpu_image(tmp_path: Path) -> None:
    out = tmp_path / "out"
    request = CompileRequest(model=tmp_path / "never-read.onnx", framework="onnx", inputs=[],
                             targets=["nvidia-t4"], output=out, backend="tensorrt")
    with pytest.raises(BackendUnavailableError) as caught:
        compile_model(request)  # the model does not exist: nothing was loaded
    message = str(caught.value)
    assert "TensorRT is not installed in this compile image" in message
    assert "compiler-image/Dockerfile.gpu" in message and "NVIDIA's index" in message
    assert caught.value.reason == "BackendUnavailable"
    assert not out.exists()


@needs_no_tensorrt
def test_the_cli_fails_with_one_reason_line(tmp_path: Path) -> None:
    from neofleet.cli import main

    result = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "--framework",
                                       "onnx", "--target", "nvidia-t4", "--backend",
                                       "tensorrt", "--compiler-option", "fp16=true",
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "neofleet: BackendUnavailable: TensorRT is not installed" in result.output


def test_cli_compiler_options_must_be_key_value(tmp_path: Path) -> None:
    from neofleet.cli import main

    result = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "--framework",
                                       "onnx", "--target", "native", "--compiler-option",
                                       "fp16", "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "InvalidCompilerOptions" in result.output and "KEY=VALUE" in result.output


@needs_no_tensorrt
def test_the_backend_itself_refuses_to_build_without_tensorrt(tmp_path: Path) -> None:
    backend = make_backend("tensorrt")
    assert "tensorrt" in BACKEND_NAMES and backend.name == "tensorrt"
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        backend.build(None, get_target("nvidia-t4"), tmp_path, _options())  # type: ignore[arg-type]


def _options() -> Any:
    from neofleet.compiler.backends.base import BuildOptions

    return BuildOptions(compiler_options={"fp16": "true"})


def test_blockers_name_what_is_missing_and_both_sides() -> None:
    t4, h100 = get_target("nvidia-t4"), get_target("nvidia-h100")
    assert build_blocker(t4, True, _host()) is None
    assert build_blocker(get_target("x86_64"), True, _host()) == (
        "the tensorrt backend builds engines for NVIDIA GPU targets only")
    assert "no ONNX form" in (build_blocker(t4, False, _host()) or "")
    missing = build_blocker(t4, True, _host(trt=None)) or ""
    assert missing.startswith(NOT_INSTALLED) and "No module named 'tensorrt'" in missing
    wrong_gpu = build_blocker(h100, True, _host()) or ""
    assert "needs sm_90" in wrong_gpu and "Tesla T4 (sm_75)" in wrong_gpu
    no_gpu = build_blocker(t4, True, _host(cc=None)) or ""
    assert "needs sm_75" in no_gpu and "no NVIDIA GPU" in no_gpu
    wrong_trt = build_blocker(t4, True, _host(trt="10.16.1.11")) or ""
    assert "TensorRT 10.0" in wrong_trt and "TensorRT 10.16.1.11" in wrong_trt
    old = build_blocker(get_target("jetson-nano"), True, _host()) or ""
    assert "TensorRT 8.2" in old and ">= 8.5" in old
    cross = build_blocker(get_target("jetson-orin-nano"), True, _host(cc=(8, 7))) or ""
    assert "cannot cross-compile" in cross


def test_auto_records_why_tensorrt_was_skipped() -> None:
    from neofleet.bundle.meta import Verification

    reason = build_blocker(get_target("nvidia-t4"), True, _host(trt=None)) or ""
    verified = Verification(passed=True, method="gpu", samples=3, rtol=1e-3, atol=1e-4)
    winner, selection = select_candidate([CandidateOutcome("tvm-cuda", verified, None)], False)
    reports = [CandidateReport(backend="tensorrt", status="not-applicable", message=reason)]
    noted = note_skipped(selection, winner.backend, ["tensorrt", "tvm-cuda"], reports)
    assert noted.reason.startswith(selection.reason)
    assert "tensorrt skipped: TensorRT is not installed in this compile image" in noted.reason
    # backends after the winner in the target's order are not news
    assert note_skipped(selection, "tensorrt", ["tensorrt", "tvm-cuda"], reports) == selection


def test_a_verified_engine_is_preferred_when_nothing_can_be_timed() -> None:
    from neofleet.bundle.meta import Verification

    ok = Verification(passed=True, method="gpu", samples=3, rtol=1e-3, atol=1e-4)
    winner, selection = select_candidate([CandidateOutcome("tvm-cuda", ok, None),
                                          CandidateOutcome("tensorrt", ok, None)], False)
    assert winner.backend == "tensorrt" and "tensorrt" in selection.reason


# --------------------------------------------------------------------------- options, profiles


def _spec(name: str, *shape: int) -> TensorSpec:
    return TensorSpec(name=name, shape=list(shape), dtype="float32")


def test_options_parse_and_ignore_other_backends_keys() -> None:
    parsed = parse_options({"fp16": "True", "workspace_mib": "512", "max_batch": "32",
                            "builder_optimization_level": "4", "tvm.something": "x",
                            "profile.image": "1x3x8x8:4x3x8x8:16x3x8x8"})
    assert parsed.fp16 and parsed.workspace_mib == 512 and parsed.max_batch == 32
    assert parsed.builder_optimization_level == 4 and parsed.min_batch is None
    assert parsed.profiles == {"image": ProfileShapes((1, 3, 8, 8), (4, 3, 8, 8),
                                                      (16, 3, 8, 8))}
    assert parse_options({}) == TrtOptions()


@pytest.mark.parametrize(("options", "message"), [
    ({"fp16": "maybe"}, "use true or false"),
    ({"workspace_mib": "lots"}, "expected an integer"),
    ({"builder_optimization_level": "9"}, "expected 0..5"),
    ({"min_batch": "2"}, "min_batch needs max_batch"),
    ({"min_batch": "8", "max_batch": "4"}, "below min_batch=8"),
    ({"profile.x": "1x4:2x4"}, "expected MIN:OPT:MAX"),
    ({"profile.x": "1x4:2x4:3"}, "one rank"),
    ({"profile.x": "4x4:2x4:8x4"}, "MIN <= OPT <= MAX"),
    ({"profile.x": "1xfour:2x4:3x4"}, "is not a shape"),
    ({"profile.": "1x4:1x4:1x4"}, "needs an input name"),
])
def test_bad_options_are_typed_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(CompilerOptionsError, match=re.escape(message)) as caught:
        parse_options(options)
    assert caught.value.reason == "InvalidCompilerOptions"


def test_a_static_model_gets_the_declared_shape_only() -> None:
    plan = plan_profiles({"x": (1, 16)}, [_spec("x", 1, 16)], TrtOptions())
    assert plan == {"x": ProfileShapes((1, 16), (1, 16), (1, 16))}


def test_dynamic_dims_are_fixed_to_the_declaration_by_default() -> None:
    plan = plan_profiles({"x": (-1, 16), "m": (-1, -1)}, [_spec("x", 4, 16), _spec("m", 4, 7)],
                         TrtOptions())
    assert plan["x"] == ProfileShapes((4, 16), (4, 16), (4, 16))
    assert plan["m"] == ProfileShapes((4, 7), (4, 7), (4, 7))


def test_max_batch_widens_dynamic_batch_dims_around_the_declared_batch() -> None:
    plan = plan_profiles({"x": (-1, 3, 8, 8), "scale": (1,)},
                         [_spec("x", 8, 3, 8, 8), _spec("scale", 1)],
                         parse_options({"max_batch": "32", "min_batch": "2"}))
    assert plan["x"] == ProfileShapes((2, 3, 8, 8), (8, 3, 8, 8), (32, 3, 8, 8))
    assert plan["scale"] == ProfileShapes((1,), (1,), (1,))  # static: untouched


def test_an_explicit_profile_wins_and_must_contain_the_declaration() -> None:
    options = parse_options({"profile.x": "1x16:4x16:64x16", "max_batch": "8"})
    plan = plan_profiles({"x": (-1, 16), "y": (-1, 2)}, [_spec("x", 2, 16), _spec("y", 2, 2)],
                         options)
    assert plan["x"] == ProfileShapes((1, 16), (4, 16), (64, 16))
    assert plan["y"] == ProfileShapes((1, 2), (2, 2), (8, 2))
    with pytest.raises(CompilerOptionsError, match="does not contain the declared shape 2x16"):
        plan_profiles({"x": (-1, 16)}, [_spec("x", 2, 16)],
                      parse_options({"profile.x": "4x16:4x16:8x16"}))


@pytest.mark.parametrize(("inputs", "declared", "options", "error", "message"), [
    ({"x": (1, 16)}, [("x", 1, 16)], {"max_batch": "8"}, CompilerOptionsError,
     "this model has none: x 1x16"),
    ({"x": (1, 16)}, [("x", 1, 16)], {"profile.x": "1x16:1x16:4x16"}, CompilerOptionsError,
     "dim 0 is static (1)"),
    ({"x": (-1, 16)}, [("x", 2, 16)], {"profile.z": "1x1:1x1:1x1"}, CompilerOptionsError,
     "no input 'z'"),
    ({"x": (-1, 16)}, [("x", 2, 16)], {"profile.x": "1x1x16:2x1x16:3x1x16"},
     CompilerOptionsError, "rank 3, the input has rank 2"),
    ({"x": (-1, 16)}, [("x", 64, 16)], {"max_batch": "8"}, CompilerOptionsError,
     "declared batch 64 is outside"),
    ({"x": (1, 8)}, [("x", 1, 16)], {}, BackendBuildError, "TensorRT sees input x as 1x8"),
    ({"w": (1, 16)}, [("x", 1, 16)], {}, BackendBuildError, "does not declare"),
])
def test_profile_errors(inputs: dict[str, tuple[int, ...]], declared: list[tuple[Any, ...]],
                        options: dict[str, str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        plan_profiles(inputs, [_spec(d[0], *d[1:]) for d in declared], parse_options(options))


# --------------------------------------------------------------------------- runtime


def _trt_meta(trt: str = "10.0.1.6", cc: str = "7.5") -> CompiledMeta:
    doc = make_meta(backend="tensorrt").model_dump(by_alias=True, mode="json")
    doc["Requirements"].update(TargetDevice="nvidia-t4", TargetDeviceType="gpu")
    doc["Neofleet"]["target"] = {"name": "nvidia-t4", "arch": "x86_64", "device_type": "gpu",
                                 "accelerator": "nvidia", "compute_capability": cc,
                                 "cuda_version": "12.2", "trt_version": "10.0"}
    doc["Neofleet"]["backend_options"] = {"trt_version": trt, "compute_capability": cc,
                                          "sm": "sm_" + cc.replace(".", ""),
                                          "cuda_version": "12.2", "precision": "fp32"}
    doc["Neofleet"]["compiler"] = {"neofleet": "0.1.0", "tensorrt": trt, "cuda": "12.2"}
    return CompiledMeta.model_validate(doc)


def test_the_runtime_refuses_a_tensorrt_bundle_here_naming_both_sides(tmp_path: Path) -> None:
    from neofleet.runtime import DLRModel

    bundle = make_bundle(tmp_path / "t4", backend="tensorrt", meta=_trt_meta())
    assert bundle.manifest.backend == "tensorrt"
    with pytest.raises((IncompatibleBundleError, RuntimeBackendUnavailable)) as caught:
        DLRModel(bundle.path, "gpu")
    message = str(caught.value)
    assert "nvidia-t4" in message and "TensorRT 10.0.1.6" in message and "sm_75" in message
    assert "this host has" in message
    if not _tensorrt_imports():
        assert "no TensorRT (" in message
    with pytest.raises(IncompatibleBundleError, match=r"dev_type='gpu', not 'cpu'") as cpu:
        DLRModel(bundle.path, "cpu")
    assert "TensorRT 10.0.1.6" in str(cpu.value) and "this host has" in str(cpu.value)


def test_a_bundle_without_engine_bindings_is_refused(tmp_path: Path) -> None:
    from neofleet.runtime import DLRModel

    doc = _trt_meta().model_dump(by_alias=True, mode="json")
    doc["Neofleet"]["backend_options"] = {}
    doc["Neofleet"]["compiler"] = {"neofleet": "0.1.0"}
    bundle = make_bundle(tmp_path / "b", backend="tensorrt",
                         meta=CompiledMeta.model_validate(doc))
    with pytest.raises(IncompatibleBundleError, match="does not record the TensorRT version"):
        DLRModel(bundle.path, "gpu")


def test_check_host_rules() -> None:
    required = EngineRequirements("nvidia-t4", "10.0.1.6", "7.5", "12.2")
    check_host(required, _host())  # same release, same GPU: loads
    check_host(required, _host(trt="10.0.1"))  # no build number on one side: release matches
    with pytest.raises(IncompatibleBundleError) as trt:
        check_host(required, _host(trt="10.16.1.11"))
    assert "built with TensorRT 10.0.1.6" in str(trt.value)
    assert "this host has TensorRT 10.16.1.11" in str(trt.value)
    with pytest.raises(IncompatibleBundleError) as gpu:
        check_host(required, _host(cc=(8, 6)))  # sm_86 could run sm_75 SASS, not the engine
    assert "sm_75" in str(gpu.value) and "Tesla T4 (sm_86)" in str(gpu.value)
    with pytest.raises(IncompatibleBundleError, match="no GPU 1"):
        check_host(required, _host(), dev_id=1)
    with pytest.raises(RuntimeBackendUnavailable) as missing:
        check_host(required, _host(trt=None))  # the right GPU, TensorRT not installed
    assert "no TensorRT" in str(missing.value) and "pypi.nvidia.com" in str(missing.value)


@pytest.mark.parametrize(("built", "installed", "same"), [
    ("10.0.1.6", "10.0.1.6", True),
    ("10.0.1.6", "10.0.1", True),
    ("10.14.1.48", "10.14.1.48.post1", True),
    ("10.0.1.6", "10.0.1.7", False),
    ("10.0.1", "10.1.0", False),
    ("10.0", "10.0.1", False),  # a bundle must record the full version
])
def test_engines_need_the_same_tensorrt_release(built: str, installed: str, same: bool) -> None:
    assert same_trt_release(built, installed) is same


def test_version_prefixes() -> None:
    assert version_prefix_matches("10.0", "10.0.1.6")
    assert version_prefix_matches("10", "10.16.1.11")
    assert not version_prefix_matches("10.0", "10.16.1.11")
    assert not version_prefix_matches("", "10.0.1")


# --------------------------------------------------------------------------- the GPU image


def test_the_gpu_image_pins_the_presets_tensorrt_and_cuda() -> None:
    text = (ROOT / "compiler-image" / "Dockerfile.gpu").read_text()
    trt = re.search(r"^ARG TENSORRT_VERSION=(\S+)$", text, re.M)
    cuda = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+\.\d+)\.\d+-runtime-\S+$", text, re.M)
    assert trt and cuda, "Dockerfile.gpu must pin TENSORRT_VERSION and a CUDA runtime base"
    assert "tensorrt-cu12==${TENSORRT_VERSION}" in text and "https://pypi.nvidia.com" in text
    assert "USER 65532:65532" in text and "neofleet[compiler,tensorrt]" in text
    x86_gpus = [t for t in CATALOGUE if t.device_type == "gpu" and t.arch == "x86_64"]
    assert x86_gpus
    for target in x86_gpus:
        assert target.trt_version and version_prefix_matches(target.trt_version, trt[1]), (
            f"{target.name} runs TensorRT {target.trt_version}; Dockerfile.gpu pins {trt[1]}")
        assert target.cuda_version == cuda[1], (
            f"{target.name} runs CUDA {target.cuda_version}; Dockerfile.gpu uses {cuda[1]}")
