"""Canary analysis (pure): which PromQL to ask, and whether the answers pass.

Default metrics, from the runtime's own series (labels ``model`` = the
EdgeModelDeployment's name, ``revision``):

- ``p99-latency``: p99 of ``neofleet_inference_request_duration_seconds`` over the window;
  fails above ``threshold`` seconds, or above ``compareWithStable`` x the stable revision's
  p99 and 5 ms more than it (default 2x when neither is given: sub-millisecond p99s jitter
  by more than 2x on a busy node);
- ``error-ratio``: server-side failures (``server_error``, ``unavailable``, ``overloaded``)
  over all answered requests; fails above ``threshold`` (default 0.01).

A custom metric gives ``query`` with ``$REVISION``, ``$STABLE_REVISION``, ``$MODEL`` and
``$WINDOW`` placeholders. A query with no data fails the measurement: a canary that gets
no traffic proves nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from neofleet.api.edgemodeldeployment import Analysis, Measurement, Metric

P99 = ('histogram_quantile(0.99, sum by (le) (rate(neofleet_inference_request_duration_'
       'seconds_bucket{model="$MODEL",revision="$REVISION"}[$WINDOW])))')
ERRORS = ('(sum(rate(neofleet_inference_requests_total{model="$MODEL",revision="$REVISION",'
          'status=~"server_error|unavailable|overloaded"}[$WINDOW])) or vector(0)) / '
          'sum(rate(neofleet_inference_requests_total{model="$MODEL",'
          'revision="$REVISION"}[$WINDOW]))')
P99_SLACK_S = 0.005
DEFAULT_METRICS = (Metric(name="p99-latency", compare_with_stable=2.0),
                   Metric(name="error-ratio", threshold=0.01))


@dataclass(frozen=True)
class Query:
    metric: str
    canary: str
    stable: str | None          # asked only when the metric compares with the stable
    threshold: float | None
    factor: float | None
    slack: float = 0.0          # the stable-relative limit is at least stable + slack


def queries(analysis: Analysis, model: str, canary: str, stable: str | None) -> list[Query]:
    found = []
    for metric in analysis.metrics or DEFAULT_METRICS:
        template = metric.query or {"p99-latency": P99, "error-ratio": ERRORS}.get(metric.name)
        if template is None:
            template = "vector(NaN)"     # unknown name without a query: fails, says so
        def fill(revision: str, template: str = template) -> str:
            return (template.replace("$STABLE_REVISION", stable or "")
                    .replace("$REVISION", revision).replace("$MODEL", model)
                    .replace("$WINDOW", analysis.window))
        factor = metric.compare_with_stable
        found.append(Query(metric.name, fill(canary),
                           fill(stable) if factor and stable else None,
                           metric.threshold, factor,
                           P99_SLACK_S if metric.name == "p99-latency" else 0.0))
    return found


def evaluate(query: Query, canary: float | None, stable: float | None,
             now: str) -> Measurement:
    """Pass when the canary's value is known and within every limit given."""
    limits = []
    if query.threshold is not None:
        limits.append(query.threshold)
    if query.factor is not None and stable is not None and math.isfinite(stable):
        limits.append(max(stable * query.factor, stable + query.slack))
    limit = min(limits) if limits else None
    known = canary is not None and math.isfinite(canary)
    ok = known and (limit is None or canary <= limit)   # type: ignore[operator]
    return Measurement(time=now, metric=query.metric, value=canary if known else None,
                       limit=limit, ok=bool(ok))
