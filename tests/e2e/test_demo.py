"""The README's first command exactly as written: `scripts/quickstart.sh` from the
repository root, so `neofleet sandbox demo` runs with its default, relative
`--dir .neofleet-demo` (a relative path once reached Prometheus and every fresh machine's
canary was rolled back). The story must end Healthy, with the p99 Prometheus measured for
both revisions printed at every pool's analysis step, and exit 0; a demo whose analysis
sees no data must fail with the reason."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POOLS = (("cpu", "avx512"), ("edge", "arm"), ("gpu", "base"))


def test_the_readme_quickstart_ends_healthy() -> None:
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    from neofleet.sandbox import cluster
    from neofleet.sandbox.errors import StateError

    done = subprocess.run(["scripts/quickstart.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800, stdin=subprocess.DEVNULL, check=False)
    out, err = done.stdout, done.stderr
    print(out)
    assert done.returncode == 0, f"{out}\n{err[-3000:]}"
    result = json.loads(next(line for line in reversed(err.splitlines())
                             if line.startswith("{")))
    assert result["phase"] == "Healthy" and result["failed"] == 0 and result["requests"] > 0
    assert result["problems"] == []
    for step in ("[1/6]", "[2/6]", "[3/6] CompilationJob Succeeded", "[4/6]", "[5/6]",
                 "[6/6]", "export KUBECONFIG=", "kubectl get cjob,emd"):
        assert step in out, out
    for pool, target in POOLS:
        assert f"pool {pool:<5} -> target {target}" in out, out
        measured = result["analysis_p99_ms"][pool]
        assert float(measured["stable"]) > 0 and float(measured["canary"]) > 0, measured
        assert re.search(rf"pool {pool}\s+step 1 Progressing\s+p99 stable [0-9.]+ ms, "
                         r"canary [0-9.]+ ms", out), out
    assert re.search(r"Healthy after \d+ s: \d+ requests, 0 failed", out), out
    with pytest.raises(StateError):             # `down` ran: no state left behind
        cluster.status(ROOT / ".neofleet-demo")


def test_a_demo_whose_analysis_sees_no_data_fails_with_the_reason(tmp_path: Path) -> None:
    """Prometheus cannot see the runtime pods: the analysis has no data, the canary is
    rolled back, and the demo reports it as a failure (the CLI exits 1 with this line)."""
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    from neofleet.sandbox import demo

    lines: list[str] = []
    result = demo.run(tmp_path / "demo", keep=False, say=lines.append, scrape_pods=False)
    text = "\n".join(lines)
    why = demo.failure(result)
    assert result["phase"] == "RolledBack", text
    assert why is not None and "no data" in why and "RolledBack" in why, why
    assert "why: " in text and "p99 stable - ms, canary - ms" in text, text
