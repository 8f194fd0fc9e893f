"""`neofleet push` / `neofleet pull` against the real registry, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neofleet.bundle import open_bundle
from tests.support.bundles import make_bundle
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neofleet.cli", *args], capture_output=True,
                          text=True, check=False, timeout=120)


def test_push_then_pull_by_digest(tmp_path: Path, registry: RegistryServer) -> None:
    bundle = make_bundle(tmp_path / "b", artifact_bytes=b"artifact bytes\n")
    pushed = _cli("push", str(bundle.path), f"oci://{registry.host}/cli/demo:v1", "--json")
    assert pushed.returncode == 0, pushed.stderr
    doc = json.loads(pushed.stdout)
    assert doc["uri"] == f"oci://{registry.host}/cli/demo@{doc['digest']}"
    assert doc["bundle_digest"] == bundle.digest
    pulled = _cli("pull", doc["uri"], str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    assert open_bundle(tmp_path / "pulled").digest == bundle.digest
    wrong = doc["uri"][:-8] + "00000000"
    failed = _cli("pull", wrong, str(tmp_path / "wrong"))
    assert failed.returncode == 1 and failed.stderr.startswith("neofleet: ")
    assert not (tmp_path / "wrong").exists()
