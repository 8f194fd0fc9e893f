from __future__ import annotations

import pytest

from neofleet.compiler.errors import UnknownTargetError
from neofleet.compiler.targets import (
    CATALOGUE,
    get_target,
    host_can_run,
    native_target,
    x86_mcpu_for_flags,
)

REQUIRED = {"x86_64", "x86_64-avx2", "x86_64-avx512", "aarch64", "rasp4b", "jetson-nano",
            "jetson-orin-nano", "nvidia-t4", "nvidia-a100"}


def test_catalogue_has_the_presets() -> None:
    names = {t.name for t in CATALOGUE}
    assert names >= REQUIRED
    assert len(names) == len(CATALOGUE)


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(UnknownTargetError, match="unknown target 'pdp11'.*rasp4b"):
        get_target("pdp11")


def test_tvm_target_dicts() -> None:
    assert get_target("rasp4b").tvm_target() == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert get_target("x86_64-avx2").tvm_target() == {"kind": "llvm", "mcpu": "x86-64-v3"}


def test_gpu_presets_are_buildable() -> None:
    t4 = get_target("nvidia-t4")
    assert t4.device_type == "gpu" and t4.compute_capability == "7.5" and t4.buildable
    assert get_target("jetson-orin-nano").arch == "aarch64"


@pytest.mark.parametrize(("flags", "mcpu"), [
    ({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"},
     "x86-64-v4"),
    ({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "amx_tile", "avx512_fp16"},
     "sapphirerapids"),
    ({"avx2", "fma", "bmi2"}, "x86-64-v3"),
    ({"sse2"}, "x86-64"),
])
def test_mcpu_from_cpuinfo_flags(flags: set[str], mcpu: str) -> None:
    assert x86_mcpu_for_flags(flags) == mcpu


def test_host_can_run_checks_features_and_arch() -> None:
    avx2_host = frozenset({"avx", "avx2", "fma"})
    if native_target().arch == "x86_64":
        assert host_can_run(get_target("x86_64-avx2"), avx2_host)
        assert not host_can_run(get_target("x86_64-avx512"), avx2_host)
        assert not host_can_run(get_target("aarch64"), avx2_host)
    assert not host_can_run(get_target("nvidia-t4"), avx2_host)
    assert host_can_run(native_target())
