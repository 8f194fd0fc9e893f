"""The neofleet Grafana dashboard, built with grafana-foundation-sdk (the ``observe`` extra).

Rows: traffic (requests/s, statuses, the server-side error ratio, failures by reason),
latency (p50/p95/p99 by model, revision and pool; queue wait; in flight), the rollout
(canary vs stable: traffic share, p99, error ratio and pods per revision), compiles
(outcomes and durations by target) and the operator (reconciles, errors, durations).
Template variables: the Prometheus data source, and namespace, model (the
EdgeModelDeployment) and pool, each multi-valued with "All" (``.*``). Runtime panels filter
on them; operator panels do not (the operator's series carry no object's namespace).

    from neofleet.observe.dashboard import dashboard_json
    text = dashboard_json()          # the JSON Grafana imports, stable byte for byte
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

from neofleet.observe import promql as q

UID = "neofleet"
TITLE = "neofleet: inference, rollouts, compiles"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# what every runtime panel filters on (the template variables)
RUNTIME = ('namespace=~"$namespace"', 'model=~"$model"', 'pool=~"$pool"')
OK_ONLY = 'status="ok"'
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: Sequence[Query]
    span: int = 12
    stacked: bool = False


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: Sequence[PanelSpec] = field(default_factory=tuple)


def _sel(*extra: str) -> str:
    return q.matchers(*RUNTIME, *extra)


def _latency(by: Sequence[str], legend: str, quantiles: Sequence[float] = QUANTILES,
             histogram: str = q.REQUEST_DURATION, extra: Sequence[str] = (OK_ONLY,),
             selector: str | None = None, window: str = RATE) -> list[Query]:
    chosen = _sel(*extra) if selector is None else selector
    return [Query(q.quantile(quantile, histogram, chosen, by, window),
                  f"p{round(quantile * 100)} {legend}") for quantile in quantiles]


def _traffic() -> RowSpec:
    by = ("model", "pool")
    return RowSpec("Traffic", (
        PanelSpec("Requests per second by model and pool",
                  "Answered /infer requests of every status.", "reqps",
                  [Query(q.request_rate(RUNTIME, by, RATE), "{{model}} / {{pool}}")]),
        PanelSpec("Requests per second by status",
                  "ok, client_error (the caller's fault), overloaded (--max-queue full), "
                  "unavailable (loading or draining), server_error.", "reqps",
                  [Query(q.request_rate(RUNTIME, ["status"], RATE), "{{status}}")],
                  stacked=True),
        PanelSpec("Server-side error ratio by model and pool",
                  "server_error + unavailable + overloaded over all answered requests "
                  "(what the canary analysis and the NeofleetHighErrorRatio alert use).",
                  "percentunit", [Query(q.error_ratio(RUNTIME, by, RATE),
                                        "{{model}} / {{pool}}")]),
        PanelSpec("Failed requests per second by reason",
                  "neofleet_inference_errors_total by its reason label.", "reqps",
                  [Query(q.aggregate("sum", ["reason"], q.rate(q.ERRORS, _sel(), RATE)),
                         "{{reason}}")], stacked=True),
    ))


def _latency_row() -> RowSpec:
    return RowSpec("Latency", (
        PanelSpec("Inference latency p50 / p95 / p99 by model, revision and pool",
                  "Time from request to response of successful (status ok) /infer "
                  "requests, from the neofleet_inference_request_duration_seconds "
                  "histogram.", "s",
                  _latency(["model", "revision", "pool"], "{{model}} / {{pool}} {{revision}}"),
                  span=24),
        PanelSpec("Queue wait p99 by model and pool",
                  "Time a request waited for a worker thread (or for its batch to run).",
                  "s", _latency(["model", "pool"], "{{model}} / {{pool}}", (0.99,),
                                q.QUEUE_DURATION, ())),
        PanelSpec("Requests in flight by model and pool",
                  "Requests admitted and not yet answered (the server refuses more than "
                  "--max-queue).", "short",
                  [Query(q.aggregate("sum", ["model", "pool"], f"{q.INFLIGHT}{_sel()}"),
                         "{{model}} / {{pool}}")]),
    ))


def _rollout() -> RowSpec:
    by = ["model", "pool", "revision"]
    per_revision = q.request_rate(RUNTIME, by, RATE)
    per_pool = q.request_rate(RUNTIME, ["model", "pool"], RATE)
    legend = "{{model}} / {{pool}} {{revision}}"
    return RowSpec("Rollout: canary vs stable (by revision)", (
        PanelSpec("Traffic share by revision",
                  "Each revision's share of its pool's requests: during a canary step it "
                  "follows the canary's pod count (setWeight).", "percentunit",
                  [Query(f"{per_revision} / ignoring (revision) group_left {per_pool}",
                         legend)], stacked=True),
        PanelSpec("p99 latency by revision",
                  "The canary's p99 next to the stable revision's (the analysis' "
                  "p99-latency metric compares these).", "s",
                  _latency(by, legend, (0.99,))),
        PanelSpec("Server-side error ratio by revision",
                  "The analysis' error-ratio metric, per revision.", "percentunit",
                  [Query(q.error_ratio(RUNTIME, by, RATE), legend)]),
        PanelSpec("Runtime pods by revision",
                  "Servers reporting neofleet_model_info, by revision and target; two "
                  "revisions in one pool for long is a rollout waiting (see "
                  "NeofleetRolloutStuck).", "short",
                  [Query(q.aggregate("count", [*by, "target"], f"{q.MODEL_INFO}{_sel()}"),
                         "{{model}} / {{pool}} {{revision}} ({{target}})")], stacked=True),
        PanelSpec("Pool pods: ready vs desired",
                  "From the operator: the runtime pods each pool should run and those ready "
                  "(stable and canary); a gap for 10 minutes is NeofleetRuntimePodsNotReady.",
                  "short",
                  [Query(q.aggregate("max", ["name", "pool", "state"],
                                     f'{q.POOL_PODS}{{namespace=~"$namespace", '
                                     f'name=~"$model", pool=~"$pool"}}'),
                         "{{name}} / {{pool}} {{state}}")]),
    ))


def _compiles() -> RowSpec:
    count = f"{q.COMPILE_DURATION}_count"
    return RowSpec("Compiles (operator)", (
        PanelSpec("Compiles by target and outcome (last hour)",
                  "Compile Jobs that ended in the hour before each point, by the "
                  "CompilationJob's target name and outcome (Succeeded, Failed).", "short",
                  [Query(q.aggregate("sum", ["target", "outcome"],
                                     q.rate(count, "", "1h", "increase")),
                         "{{target}} {{outcome}}")]),
        PanelSpec("Compile duration p50 / p95 by target (last hour)",
                  "From the compile pod's start to its end, from "
                  "neofleet_compile_duration_seconds.", "s",
                  _latency(["target"], "{{target}}", (0.5, 0.95), q.COMPILE_DURATION,
                           selector="", window="1h")),
    ))


def _operator() -> RowSpec:
    errors = q.rate(q.RECONCILES, q.matchers(f'outcome="{q.RECONCILE_ERROR}"'), "5m",
                    "increase")
    return RowSpec("Operator", (
        PanelSpec("Reconciles per second by kind and outcome",
                  "CompilationJob and EdgeModelDeployment reconciles (events and the "
                  "once-a-minute resync).", "ops",
                  [Query(q.aggregate("sum", ["kind", "outcome"], q.rate(q.RECONCILES, "", RATE)),
                         "{{kind}} {{outcome}}")], span=8),
        PanelSpec("Reconcile errors by kind (per 5 minutes)",
                  "Reconciles that raised (the operator retries at the next resync); "
                  "see NeofleetOperatorReconcileErrors.", "short",
                  [Query(q.aggregate("sum", ["kind"], errors), "{{kind}}")], span=8),
        PanelSpec("Reconcile duration p50 / p99 by kind",
                  "Time per reconcile, from neofleet_operator_reconcile_duration_seconds.",
                  "s", _latency(["kind"], "{{kind}}", (0.5, 0.99), q.RECONCILE_DURATION,
                                selector=""), span=8),
    ))


ROWS = (_traffic, _latency_row, _rollout, _compiles, _operator)


def _variable(name: str, label: str, query: str) -> builders.QueryVariable:
    return (builders.QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
            .multi(True).include_all(True).all_value(".*")
            .current(models.VariableOption(selected=True, text="All", value="$__all"))
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC))


def _panel(spec: PanelSpec, panel_id: int) -> timeseries.Panel:
    panel = (timeseries.Panel().id(panel_id).title(spec.title).description(spec.description)
             .datasource(DATASOURCE).unit(spec.unit).min(0).height(8).span(spec.span)
             .fill_opacity(10)
             .legend(common_builders.VizLegendOptions()
                     .display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)
                     .calcs(["mean", "max", "lastNotNull"]))
             .tooltip(common_builders.VizTooltipOptions()
                      .mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if spec.stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(prometheus.Dataquery().ref_id(chr(ord("A") + index))
                                  .expr(query.expr).legend_format(query.legend).range())
    return panel


def build() -> models.Dashboard:
    runtime_info = q.MODEL_INFO
    board = (builders.Dashboard(TITLE).uid(UID).description(
                 "neofleet runtime, rollout, compile and operator metrics. Generated by "
                 "`neofleet observe` (src/neofleet/observe/dashboard.py): do not edit.")
             .tags(["neofleet"]).refresh("30s").time("now-1h", "now").timezone("browser")
             .tooltip(models.DashboardCursorSync.CROSSHAIR).editable()
             .with_variable(builders.DatasourceVariable("datasource").label("Data source")
                            .type("prometheus"))
             .with_variable(_variable("namespace", "Namespace",
                                      f"label_values({runtime_info}, namespace)"))
             .with_variable(_variable("model", "Model",
                                      f'label_values({runtime_info}{{namespace=~"$namespace"}}'
                                      ", model)"))
             .with_variable(_variable("pool", "Pool",
                                      f'label_values({runtime_info}{{namespace=~"$namespace", '
                                      'model=~"$model"}, pool)')))
    panel_id = 0
    for make in ROWS:
        row = make()
        panel_id += 1
        board = board.with_row(builders.Row(row.title).id(panel_id))
        for spec in row.panels:
            panel_id += 1
            board = board.with_panel(_panel(spec, panel_id))
    return board.build()


def dashboard_dict() -> dict[str, Any]:
    """The dashboard as plain JSON data."""
    data = json.loads(json.dumps(build(), cls=JSONEncoder))
    assert isinstance(data, dict)
    return data


def dashboard_json() -> str:
    """The file Grafana imports (keys sorted, two-space indent, a final newline)."""
    return json.dumps(dashboard_dict(), indent=2, sort_keys=True) + "\n"
