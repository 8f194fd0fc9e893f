"""The README's first command (`scripts/quickstart.sh` → `neofleet sandbox demo`) run as
it is, in its own sandbox: compile for three targets, deploy to three pools, a canary under
live traffic that completes with no failed request, everything stopped afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    from neofleet.sandbox import cluster, demo
    from neofleet.sandbox.errors import StateError

    lines: list[str] = []
    result = demo.run(tmp_path / "demo", keep=False, say=lines.append)
    text = "\n".join(lines)
    assert result["phase"] == "Healthy" and result["failed"] == 0, text
    assert result["requests"] > 0
    for step in ("[1/6]", "[2/6]", "[3/6] CompilationJob Succeeded", "[4/6]", "[5/6]",
                 "[6/6]", "export KUBECONFIG="):
        assert step in text, text
    for pool, target in (("cpu", "avx512"), ("edge", "arm"), ("gpu", "base")):
        assert f"pool {pool:<5} -> target {target}" in text, text
    with pytest.raises(StateError):             # `down` ran: no state left behind
        cluster.status(tmp_path / "demo")
