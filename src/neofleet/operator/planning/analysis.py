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
``$WINDOW`` placeholders. A query with no data (the canary's pods not scraped yet,
Prometheus unreachable, a quantile of nothing) is *inconclusive*: it neither passes nor
fails, and ``inconclusiveLimit`` consecutive rounds of it are tolerated; one more counts as
a failure, because a canary that gets no traffic proves nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from neofleet.api.edgemodeldeployment import (
    DEFAULT_ERROR_RATIO,
    DEFAULT_P99_FACTOR,
    DEFAULT_P99_SLACK_S,
    Analysis,
    Measurement,
    Metric,
)

P99 = ('histogram_quantile(0.99, sum by (le) (rate(neofleet_inference_request_duration_'
       'seconds_bucket{model="$MODEL",revision="$REVISION"}[$WINDOW])))')
ERRORS = ('(sum(rate(neofleet_inference_requests_total{model="$MODEL",revision="$REVISION",'
          'status=~"server_error|unavailable|overloaded"}[$WINDOW])) or vector(0)) / '
          'sum(rate(neofleet_inference_requests_total{model="$MODEL",'
          'revision="$REVISION"}[$WINDOW]))')
DEFAULT_METRICS = (Metric(name="p99-latency", compare_with_stable=DEFAULT_P99_FACTOR),
                   Metric(name="error-ratio", threshold=DEFAULT_ERROR_RATIO))


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
                           DEFAULT_P99_SLACK_S if metric.name == "p99-latency" else 0.0))
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
                       limit=limit, ok=bool(ok), inconclusive=not known)


Verdict = Literal["passed", "failed", "inconclusive"]


def verdict(measurements: Sequence[Measurement], inconclusive_before: int,
            inconclusive_limit: int) -> Verdict:
    """One round of measurements: any real failure fails it; a round with data missing is
    inconclusive until more than ``inconclusive_limit`` such rounds came in a row."""
    if any(not m.ok and not m.inconclusive for m in measurements):
        return "failed"
    if any(m.inconclusive for m in measurements):
        return "failed" if inconclusive_before >= inconclusive_limit else "inconclusive"
    return "passed"



def describe(measurement: Measurement) -> str:
    if measurement.inconclusive:
        return f"{measurement.metric}=no data"
    return f"{measurement.metric}={measurement.value} (limit {measurement.limit})"
