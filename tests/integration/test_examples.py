"""The examples in examples/ are runnable: run them as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neofleet.bundle import open_bundle
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_quickstart(tmp_path: Path) -> None:
    env_db = {"NEOFLEET_TUNING_DB": str(tmp_path / "db")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "q")],
        capture_output=True, text=True, check=False, timeout=900,
        env={**__import__("os").environ, **env_db})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "DLRModel(" in out and "-> class" in out
    assert "aarch64 bundle under qemu-aarch64: class" in out
    assert "onnxruntime (original model)" in out and "x onnxruntime)" in out
    for target in ("native", "aarch64"):
        bundle = open_bundle(tmp_path / "q" / target)
        assert bundle.meta.neofleet.verification.passed
        assert bundle.digest in out


def test_tree_model_example(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tree_model.py"), "--out", str(tmp_path),
         "--trees", "20"], capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    mine = next(ln for ln in lines if ln.startswith("DLRModel labels")).split()[2:7]
    theirs = next(ln for ln in lines if ln.startswith("XGBoost labels")).split()[2:7]
    assert mine == theirs
    assert "paths verified: rows, forest" in done.stdout
    assert "qemu-aarch64" in done.stdout and "1024 rows: DLRModel" in done.stdout
    for target in ("native", "aarch64"):
        assert open_bundle(tmp_path / "bundles" / target).meta.neofleet.backend == "tl2cgen"
