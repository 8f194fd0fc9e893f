"""The alert rules under ``promtool test rules`` (Debian's prometheus package) on synthetic
series: each alert fires where it should, with its labels and rendered annotations, and
stays quiet on the neighbouring case (below the threshold, not for long enough, another
container, an old failure)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from neofleet.observe.generate import DEFAULT_DIR, RULES_FILE
from neofleet.observe.rules import ALERTS

RULES = Path(__file__).resolve().parents[2] / DEFAULT_DIR / RULES_FILE
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(not Path(PROMTOOL).exists(),
                                reason="promtool is not installed (Debian package prometheus)")

SERVE = {"namespace": "ml", "model": "cnn", "pool": "edge", "target": "aarch64",
         "job": "ml/cnn", "instance": "10.0.0.5:8080"}
OPERATOR = {"namespace": "neofleet-system", "job": "neofleet", "instance": "10.0.0.9:9090"}


EMD = {"namespace": "ml", "name": "cnn"}


def series(name: str, values: str, /, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def latency(values_by_le: dict[str, str], **labels: str) -> list[dict[str, str]]:
    return [series("neofleet_inference_request_duration_seconds_bucket", values, le=le,
                   status="ok", **labels) for le, values in values_by_le.items()]


def requests(ok: str, failed: str, **labels: str) -> list[dict[str, str]]:
    name = "neofleet_inference_requests_total"
    return [series(name, ok, status="ok", **labels),
            series(name, failed, status="server_error", **labels),
            series(name, failed, status="client_error", **labels)]   # never counted


@dataclass
class Case:
    alert: str
    input: list[dict[str, str]]
    eval_time: str
    fires: list[dict[str, str]] = field(default_factory=list)   # the alerts' labels
    value: str = ""                  # how {{ $value | … }} renders in the annotations


SLOW = {"0.25": "0x30", "0.5": "0x30", "1": "0+60x30", "+Inf": "0+60x30"}
FAST = {"0.025": "0+60x30", "0.25": "0+60x30", "0.5": "0+60x30", "1": "0+60x30",
        "+Inf": "0+60x30"}
ALERT_LABELS = {"namespace": "ml", "model": "cnn", "pool": "edge"}
POD = {"namespace": "ml", "pod": "cnn-edge-3f2a-x7k2p"}
POOL_PODS = "neofleet_edgemodeldeployment_pool_pods"
# the operator's target labels, less `namespace` (honorLabels keeps the series' own)
OPERATOR_POD = {"job": "neofleet", "instance": "10.0.0.9:9090"}
COMPILE = "neofleet_compile_duration_seconds"
EDGE = {**OPERATOR, "target": "edge", "outcome": "Failed"}

CASES = {
    "p99 over 0.5 s for 10 min fires": Case(
        "NeofleetHighP99Latency", latency(SLOW, revision="r1", **SERVE), "20m",
        [ALERT_LABELS], "995ms"),
    "p99 over 0.5 s for 5 min only is pending": Case(
        "NeofleetHighP99Latency", latency(SLOW, revision="r1", **SERVE), "9m"),
    "p99 of 25 ms is fine": Case(
        "NeofleetHighP99Latency", latency(FAST, revision="r1", **SERVE), "20m"),
    "10% server-side errors fire": Case(
        "NeofleetHighErrorRatio", requests("0+80x20", "0+10x20", revision="r1", **SERVE),
        "15m", [ALERT_LABELS], "10%"),
    "1% server-side errors (and client errors) are fine": Case(
        "NeofleetHighErrorRatio", requests("0+99x20", "0+1x20", revision="r1", **SERVE),
        "15m"),
    "a runtime target down for 7 min fires": Case(
        "NeofleetRuntimeTargetDown",
        [series("up", "1 1 1 0x10", container="runtime", **POD, job="ml/cnn",
                instance="10.0.0.5:8080")], "10m",
        [{"container": "runtime", **POD, "job": "ml/cnn", "instance": "10.0.0.5:8080"}]),
    "a runtime target down for 3 min, or another container down, is quiet": Case(
        "NeofleetRuntimeTargetDown",
        [series("up", "1x7 0x3", container="runtime", **POD, job="ml/cnn",
                instance="10.0.0.5:8080"),
         series("up", "0x10", container="sidecar", **POD, job="ml/other",
                instance="10.0.0.5:9000")], "10m"),
    "a pool one pod short for 15 min fires": Case(
        "NeofleetRuntimePodsNotReady",
        [series(POOL_PODS, "2x20", state="desired", **EMD, pool="edge", **OPERATOR_POD),
         series(POOL_PODS, "1x20", state="ready", **EMD, pool="edge", **OPERATOR_POD)],
        "15m", [{**EMD, "pool": "edge"}], "1"),
    "a full pool, and a short dip, are quiet": Case(
        "NeofleetRuntimePodsNotReady",
        [series(POOL_PODS, "2x20", state="desired", **EMD, pool="edge", **OPERATOR_POD),
         series(POOL_PODS, "2x20", state="ready", **EMD, pool="edge", **OPERATOR_POD),
         series(POOL_PODS, "4x20", state="desired", **EMD, pool="cpu", **OPERATOR_POD),
         series(POOL_PODS, "4x10 3x5 4x5", state="ready", **EMD, pool="cpu",
                **OPERATOR_POD)], "15m"),
    "a canary step over an hour old fires": Case(
        "NeofleetRolloutStuck",
        [series("neofleet_rollout_step_started_timestamp_seconds", "0x90", **EMD),
         series("neofleet_rollout_paused", "0x90", **EMD)], "70m",
        [EMD], "2"),
    "a pause waiting for a promotion, or a young step, is quiet": Case(
        "NeofleetRolloutStuck",
        [series("neofleet_rollout_step_started_timestamp_seconds", "0x90", **EMD),
         series("neofleet_rollout_paused", "1x90", **EMD),
         series("neofleet_rollout_step_started_timestamp_seconds", "3000x90",
                namespace="ml", name="young"),
         series("neofleet_rollout_paused", "0x90", namespace="ml", name="young")], "70m"),
    "a target's first failure (a new series) fires": Case(
        "NeofleetCompileFailed",
        [series(f"{COMPILE}_count", "_x5 1x20", **EDGE),
         series(f"{COMPILE}_created", "_x5 300x20", **EDGE)], "10m",
        [{"namespace": "neofleet-system", "target": "edge"}]),
    "a further failure of an old series fires": Case(
        "NeofleetCompileFailed",
        [series(f"{COMPILE}_count", "1x40 2x20", **EDGE),
         series(f"{COMPILE}_created", "0x60", **EDGE)], "50m",
        [{"namespace": "neofleet-system", "target": "edge"}]),
    "an old failure and new successes are quiet": Case(
        "NeofleetCompileFailed",
        [series(f"{COMPILE}_count", "1x60", **EDGE),
         series(f"{COMPILE}_created", "0x60", **EDGE),
         series(f"{COMPILE}_count", "_x50 1x10", **{**EDGE, "outcome": "Succeeded"}),
         series(f"{COMPILE}_created", "_x50 3000x10", **{**EDGE, "outcome": "Succeeded"})],
        "55m"),
    "reconcile errors every minute for 30 min fire": Case(
        "NeofleetOperatorReconcileErrors",
        [series("neofleet_operator_reconciles_total", "0+1x40", kind="CompilationJob",
                outcome="error", **OPERATOR),
         series("neofleet_operator_reconciles_total", "0+5x40", kind="CompilationJob",
                outcome="ok", **OPERATOR)], "30m",
        [{"namespace": "neofleet-system", "kind": "CompilationJob"}], "10"),
    "one reconcile error is quiet": Case(
        "NeofleetOperatorReconcileErrors",
        [series("neofleet_operator_reconciles_total", "0x10 1x30",
                kind="EdgeModelDeployment", outcome="error", **OPERATOR)], "35m"),
}


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing = {case.alert for case in CASES.values() if case.fires}
    quiet = {case.alert for case in CASES.values() if not case.fires}
    assert firing == quiet == {alert.name for alert in ALERTS}


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def _render(template: str, labels: dict[str, str], value: str) -> str:
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return re.sub(r"\{\{ \$value( \| \w+)? \}\}", value, text)


def _expected(case: Case) -> list[dict[str, Any]]:
    alert = next(a for a in ALERTS if a.name == case.alert)
    found = []
    for labels in case.fires:
        full = {**labels, "alertname": alert.name, "severity": alert.severity}
        found.append({"exp_labels": {k: v for k, v in full.items() if k != "alertname"},
                      "exp_annotations": {
                          "summary": _render(alert.summary, full, case.value),
                          "description": _render(alert.description, full, case.value)}})
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_promtool_test_rules(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
           "tests": [{"name": name, "interval": "1m", "input_series": case.input,
                      "alert_rule_test": [{"eval_time": case.eval_time,
                                           "alertname": case.alert,
                                           "exp_alerts": _expected(case)}]}]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 16))
    done = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
