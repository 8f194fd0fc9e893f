"""`neofleet observe`: the checked-in dashboard and rules are what the code generates, the
dashboard re-parses with grafana-foundation-sdk, and every metric either names is one the
runtime or the operator really exports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from neofleet.observe import promql
from neofleet.observe.generate import DASHBOARD_FILE, DEFAULT_DIR, RULES_FILE, render
from neofleet.observe.rules import ALERTS, rule_groups

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / DEFAULT_DIR
# series that come from Prometheus itself
FOREIGN = {"up"}
PROMQL_WORDS = {"sum", "count", "max", "by", "on", "ignoring", "group_left", "rate", "increase",
                "histogram_quantile", "and", "or", "unless", "time", "offset", "le"}


def dashboard() -> dict[str, Any]:
    data = json.loads((FILES / DASHBOARD_FILE).read_text())
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"]
            for target in panel.get("targets", [])]


def test_checked_in_files_match_the_code() -> None:
    for name, text in render().items():
        assert (FILES / name).read_text() == text, \
            f"{DEFAULT_DIR / name} drifted: run `neofleet observe`"


def test_cli_writes_both_files(tmp_path: Path) -> None:
    from neofleet.cli import main

    result = CliRunner().invoke(main, ["observe", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [DASHBOARD_FILE, RULES_FILE]
    for name, text in render().items():
        assert (tmp_path / "out" / name).read_text() == text


def test_dashboard_reparses_with_the_sdk() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    data = dashboard()
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data


def test_dashboard_layout_and_variables() -> None:
    data = dashboard()
    panels = data["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and 0 not in ids
    assert data["uid"] == "neofleet"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "model", "pool"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model", "pool"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            runtime = "neofleet_inference" in target["expr"] or "model_info" in target["expr"]
            if runtime:   # runtime panels follow the variables
                for var in ("$namespace", "$model", "$pool"):
                    assert var in target["expr"], (panel["title"], var)
    titles = " ".join(panel["title"] for panel in panels)
    for needed in ("p50 / p95 / p99 by model, revision and pool", "Requests per second",
                   "error ratio", "by revision", "Compile duration", "Compiles by target "
                   "and outcome", "Reconcile errors", "Reconcile duration"):
        assert needed in titles, needed


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)                     # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)                     # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # ranges
    expr = re.sub(r"\b(by|on|ignoring|group_left)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("__")}


def _exported() -> set[str]:
    from prometheus_client import CollectorRegistry

    from neofleet.operator.metrics import OperatorMetrics
    from neofleet.runtime.server.metrics import Labels, ServerMetrics

    def names(registry: CollectorRegistry) -> set[str]:
        return {sample.name for family in registry.collect() for sample in family.samples}

    operator = OperatorMetrics()
    operator.observe_reconcile("CompilationJob", "error", 0.1)
    operator.observe_compile("cpu", "Failed", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
    operator.observe_deployment("ns", "m", {"phase": "Progressing", "canaryRevision": "r",
                                            "rollout": {"stepStartTime":
                                                        "2026-01-01T00:00:00Z"},
                                            "pools": [{"name": "p", "desired": 2,
                                                       "stableReady": 1}]}, True)
    server = ServerMetrics(Labels("m", "r", "p", "t"), backend="onnxruntime",
                           bundle_digest="sha256:" + "0" * 64, max_batch=None)
    return names(operator.registry) | names(server.registry)


def test_pool_pods_follow_the_status_and_forget_gone_pools() -> None:
    from neofleet.operator.metrics import OperatorMetrics

    metrics = OperatorMetrics()

    def pods() -> dict[tuple[str, str], float]:
        return {(s.labels["pool"], s.labels["state"]): s.value
                for family in metrics.registry.collect() for s in family.samples
                if s.name == "neofleet_edgemodeldeployment_pool_pods"}

    two = [{"name": "cpu", "desired": 4, "stableReady": 1, "canaryReady": 2},
           {"name": "edge", "desired": 2, "stableReady": 2}]
    metrics.observe_deployment("ml", "cnn", {"phase": "Progressing", "pools": two}, False)
    assert pods() == {("cpu", "desired"): 4, ("cpu", "ready"): 3,
                      ("edge", "desired"): 2, ("edge", "ready"): 2}
    metrics.observe_deployment("ml", "cnn", {"phase": "Healthy", "pools": two[1:]}, False)
    assert set(pods()) == {("edge", "desired"), ("edge", "ready")}
    metrics.forget_deployment("ml", "cnn")
    assert pods() == {}


def test_every_metric_used_is_exported() -> None:
    exported = _exported()
    exprs = dashboard_exprs() + [alert.expr for alert in ALERTS]
    exprs += [v["query"].removeprefix("label_values(").rsplit(",", 1)[0]
              for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    used = set().union(*(_metric_names(expr) for expr in exprs))
    assert used - FOREIGN <= exported, used - FOREIGN - exported
    assert {promql.REQUESTS, promql.REQUEST_DURATION + "_bucket", promql.RECONCILES,
            promql.COMPILE_DURATION + "_bucket", promql.MODEL_INFO} <= used


def test_label_values_are_the_runtimes_and_the_operators() -> None:
    from neofleet.operator.planning.analysis import ERRORS
    from neofleet.runtime.server.status import OK, STATUSES

    assert promql.OK == OK and set(promql.SERVER_SIDE) < set(STATUSES)
    assert promql.server_side() in ERRORS      # the same error ratio as the canary analysis
    reconcile = (ROOT / "src/neofleet/operator/reconcile.py").read_text()
    assert f'outcome = "{promql.RECONCILE_ERROR}"' in reconcile
    assert f'"{promql.COMPILE_FAILED}"' in reconcile
    runtime = (ROOT / "src/neofleet/operator/render/runtime.py").read_text()
    assert f'"name": "{promql.RUNTIME_CONTAINER}"' in runtime
    assert f'"app.kubernetes.io/name": "{promql.RUNTIME_APP}"' in runtime


def test_rules_document() -> None:
    doc = yaml.safe_load((FILES / RULES_FILE).read_text())
    assert doc == rule_groups()
    names = [rule["alert"] for group in doc["groups"] for rule in group["rules"]]
    assert len(names) == len(set(names)) == len(ALERTS) == 7
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert "{{" not in rule["expr"]
    for alert in ALERTS:
        assert alert.expr.startswith(("(", alert.measure)) and alert.measure in alert.expr


def test_observe_is_a_leaf_imported_lazily() -> None:
    src = ROOT / "src/neofleet/observe"
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("neofleet.runtime", "neofleet.operator",
                                                   "neofleet.compiler", "neofleet.sandbox")), path
    code = ("import sys, neofleet.cli, neofleet.observe, neofleet.observe.generate\n"
            "print(sorted(m for m in ('grafana_foundation_sdk', 'yaml') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_the_chart_ships_both_files_unchanged() -> None:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    chart = ROOT / "charts" / "neofleet"
    values = yaml.safe_load((chart / "examples" / "namespaced.yaml").read_text())
    rendered = helm.Chart.load(chart).render(values, name="neofleet",
                                             namespace="neofleet-system", is_install=True)
    docs = {d["kind"]: d for text in rendered.values() for d in yaml.safe_load_all(text) if d}
    assert docs["PrometheusRule"]["spec"] == rule_groups()   # Helm leaves {{ $labels }} alone
    (board,) = docs["ConfigMap"]["data"].values()
    assert json.loads(board) == dashboard()
