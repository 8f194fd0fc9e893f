"""neofleet's Prometheus alert rules, as a rule-groups document.

The same document is a ``promtool check rules``/``test rules`` file and the ``spec`` of the
chart's PrometheusRule. Every alert is ``<measure> <comparison>``: ``Alert.measure`` is the
PromQL that says how bad things are (the integration test checks that each returns data
against a real Prometheus scraping a real runtime), ``comparison`` the threshold.

Signals and their sources:

- latency, error ratio, rollout stuck: the runtime's own series (``model``, ``revision``,
  ``pool``; ``namespace`` from the PodMonitor's target labels);
- compile failures and reconcile errors: the operator's registry;
- runtime targets down: ``up`` of the targets a PodMonitor makes for the operator's runtime
  pods (``container="runtime"``);
- runtime pods not ready: the operator's ``neofleet_edgemodeldeployment_pool_pods``
  (desired and ready pods per pool, from the workloads it watches), so it needs no
  kube-state-metrics; the chart's ServiceMonitor honours the series' own ``namespace``.

A rollout has no series of its own yet (the operator exports none): "stuck" is read from
the runtime, as more than one revision serving one pool for an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neofleet.observe import promql as q

# thresholds (README, *Observe*)
P99_SECONDS = 0.5
ERROR_RATIO = 0.05
COMPILE_WINDOW = "30m"
COMPILE_WINDOW_S = 1800


@dataclass(frozen=True)
class Alert:
    name: str
    measure: str          # PromQL whose samples are compared
    comparison: str       # "> 0.5": appended to the measure
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def expr(self) -> str:
        measure = f"(\n  {self.measure}\n)" if "\n" in self.measure else self.measure
        return f"{measure} {self.comparison}"

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


_WHERE = "{{ $labels.namespace }}/{{ $labels.model }} in pool {{ $labels.pool }}"
_P99 = q.quantile(0.99, q.REQUEST_DURATION, q.matchers('status="ok"'),
                  ["namespace", "model", "pool"], "5m")
# the operator exports when the running canary's step started and whether it waits for a
# promotion on purpose (a pause step or spec.paused): only an unintended wait alerts
_STEP_AGE = ("(time() - max by (namespace, name) "
             "(neofleet_rollout_step_started_timestamp_seconds))\n"
             "  unless on (namespace, name) (max by (namespace, name) "
             "(neofleet_rollout_paused) == 1)")
_FAILED = f'{q.COMPILE_DURATION}_count{{outcome="{q.COMPILE_FAILED}"}}'
_FAILED_CREATED = f'{q.COMPILE_DURATION}_created{{outcome="{q.COMPILE_FAILED}"}}'
# A (target, outcome) series is born at 1 with the target's first failure, and increase()
# sees no rise in a series' first sample: prometheus_client's `_created` timestamp says when
# it was born, which also holds across a Prometheus restart.
_COMPILE_FAILURES = (
    "sum by (namespace, target) (\n"
    f"    (increase({_FAILED}[{COMPILE_WINDOW}]) > 0)\n"
    f"    or ({_FAILED} and (time() - {_FAILED_CREATED} < {COMPILE_WINDOW_S}))\n  )")
_NOT_READY = (f'max by (namespace, name, pool) ({q.POOL_PODS}{{state="desired"}})\n'
              f'  - max by (namespace, name, pool) ({q.POOL_PODS}{{state="ready"}})')

RUNTIME = (
    Alert("NeofleetHighP99Latency", _P99, f"> {P99_SECONDS}", "10m", "warning",
          f"p99 inference latency of {_WHERE} is {{{{ $value | humanizeDuration }}}}",
          "The 99th percentile of successful /infer requests has been above "
          f"{P99_SECONDS * 1000:.0f}ms for 10 minutes. The dashboard's p99 by revision shows "
          "whether a canary is the slow one; a growing queue wait means too few replicas "
          "or threads for the traffic."),
    Alert("NeofleetHighErrorRatio",
          q.error_ratio([], ["namespace", "model", "pool"], "5m").replace(" / ", "\n  /\n  "),
          f"> {ERROR_RATIO}", "5m", "critical",
          f"{{{{ $value | humanizePercentage }}}} of requests to {_WHERE} fail server-side",
          f"More than {ERROR_RATIO:.0%} of /infer requests have ended in server_error, "
          "unavailable or "
          "overloaded for 5 minutes (client errors do not count). Check the dashboard's "
          "failures by reason, the runtime pods' logs and whether they are ready."),
    Alert("NeofleetRuntimeTargetDown", f'up{{container="{q.RUNTIME_CONTAINER}"}}', "== 0",
          "5m", "warning",
          "runtime pod {{ $labels.namespace }}/{{ $labels.pod }} cannot be scraped",
          "Prometheus has not reached /metrics of {{ $labels.instance }} for 5 minutes: "
          "the server crashed or is restarting (a bundle that cannot be pulled, verified or "
          "loaded exits 1 with its reason in the log)."),
    Alert("NeofleetRuntimePodsNotReady", _NOT_READY, "> 0", "10m", "warning",
          "{{ $value }} runtime pod(s) of {{ $labels.namespace }}/{{ $labels.name }} in pool "
          "{{ $labels.pool }} not ready",
          "Fewer runtime pods of the pool have been ready than it should run for 10 "
          "minutes: pods still pulling or loading their bundle, failing its verification "
          "(a GPU bundle's first run), crashing, or nodes gone. `kubectl get pods -l "
          "neofleet.io/edgemodeldeployment={{ $labels.name }},neofleet.io/pool="
          "{{ $labels.pool }} -n {{ $labels.namespace }}` shows which."),
)
ROLLOUTS = (
    Alert("NeofleetRolloutStuck", _STEP_AGE, "> 3600", "5m", "warning",
          "the rollout of {{ $labels.namespace }}/{{ $labels.name }} has been on one step "
          "for over an hour",
          "A canary step has waited over an hour without the rollout pausing for a "
          "promotion: its canary pods are not getting ready, or its analysis cannot finish. "
          "`kubectl get emd {{ $labels.name }} -n {{ $labels.namespace }} -o yaml` shows "
          "the step and message; promote with the neofleet.io/promote annotation or roll "
          "back with neofleet.io/abort."),
)
OPERATOR = (
    Alert("NeofleetCompileFailed", _COMPILE_FAILURES, "> 0", "0m", "warning",
          "compiles of target {{ $labels.target }} failed",
          f"A compile Job of target {{{{ $labels.target }}}} failed in the last {COMPILE_WINDOW} "
          "(`kubectl get cjob -A` shows the CompilationJob; its status.targets[] row has the "
          "compiler's reason and message)."),
    Alert("NeofleetOperatorReconcileErrors",
          q.aggregate("sum", ["namespace", "kind"],
                      q.rate(q.RECONCILES, q.matchers(f'outcome="{q.RECONCILE_ERROR}"'), "10m",
                             "increase")),
          "> 0", "15m", "warning",
          "the neofleet operator keeps failing to reconcile {{ $labels.kind }} objects",
          "{{ $labels.kind }} reconciles have raised for 15 minutes ({{ $value | humanize }} "
          "in the last 10 minutes); the operator retries every minute. Its log has the "
          "exception; RBAC refusals and an unreachable API server are the usual causes."),
)
GROUPS = (("neofleet-runtime", RUNTIME), ("neofleet-rollouts", ROLLOUTS),
          ("neofleet-operator", OPERATOR))
ALERTS = (*RUNTIME, *ROLLOUTS, *OPERATOR)


def rule_groups() -> dict[str, Any]:
    return {"groups": [{"name": name, "rules": [alert.rule() for alert in alerts]}
                       for name, alerts in GROUPS]}


def rules_yaml() -> str:
    """The rule-groups file (multi-line expressions as literal blocks)."""
    import yaml

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    dumper: Any = type("Dumper", (yaml.SafeDumper,), {})  # SafeDumper itself stays as it is
    dumper.add_representer(str, text)
    body = str(yaml.dump(rule_groups(), Dumper=dumper, sort_keys=False, width=1 << 16,
                         allow_unicode=True))
    return ("# Generated by `neofleet observe` from src/neofleet/observe/rules.py: do not "
            "edit.\n" + body)
