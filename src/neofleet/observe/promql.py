"""Metric names, label values and PromQL building blocks (pure strings).

The names are the runtime's and the operator's stable metrics API (README, *Metrics*;
``neofleet.runtime.server.metrics`` and ``neofleet.operator.metrics``; a unit test checks
that every name used here is one those registries expose). Runtime series carry
``model`` (the EdgeModelDeployment), ``revision``, ``pool`` and ``target``, plus the
``namespace``/``pod``/``container`` target labels a Prometheus Operator PodMonitor adds.
"""

from __future__ import annotations

from collections.abc import Sequence

# the runtime (`neofleet serve`)
REQUEST_DURATION = "neofleet_inference_request_duration_seconds"
REQUESTS = "neofleet_inference_requests_total"
ERRORS = "neofleet_inference_errors_total"
QUEUE_DURATION = "neofleet_inference_queue_duration_seconds"
INFLIGHT = "neofleet_inflight_requests"
MODEL_INFO = "neofleet_model_info"
# the operator (`neofleet operator --metrics-port`)
RECONCILES = "neofleet_operator_reconciles_total"
RECONCILE_DURATION = "neofleet_operator_reconcile_duration_seconds"
COMPILE_DURATION = "neofleet_compile_duration_seconds"
POOL_PODS = "neofleet_edgemodeldeployment_pool_pods"     # state="desired" | "ready"

# `status` values that are the server's fault: the canary analysis' error ratio uses the
# same set (neofleet.operator.planning.analysis.ERRORS); client_error is the caller's
OK = "ok"
SERVER_SIDE = ("server_error", "unavailable", "overloaded")
# `outcome` of neofleet_compile_duration_seconds: the target row's final phase
COMPILE_FAILED = "Failed"
# `outcome` of neofleet_operator_reconciles_total
RECONCILE_ERROR = "error"
# The container the operator's runtime pods run in: a Prometheus Operator PodMonitor
# gives their scrape targets (and so `up`) container="runtime"
RUNTIME_CONTAINER = "runtime"
RUNTIME_APP = "neofleet-runtime"     # the pods' app.kubernetes.io/name label


def matchers(*parts: str) -> str:
    """``{a, b}`` from the non-empty parts, or nothing at all."""
    kept = [part for part in parts if part]
    return "{" + ", ".join(kept) + "}" if kept else ""


def server_side() -> str:
    return 'status=~"' + "|".join(SERVER_SIDE) + '"'


def aggregate(op: str, by: Sequence[str], inner: str) -> str:
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{op}{grouping} ({inner})"


def rate(metric: str, selector: str, window: str, fn: str = "rate") -> str:
    return f"{fn}({metric}{selector}[{window}])"


def quantile(q: float, histogram: str, selector: str, by: Sequence[str], window: str,
             fn: str = "rate") -> str:
    """The ``q`` quantile of a histogram per ``by`` over ``window``."""
    summed = aggregate("sum", ["le", *by], rate(f"{histogram}_bucket", selector, window, fn))
    return f"histogram_quantile({q}, {summed})"


def request_rate(selector_parts: Sequence[str], by: Sequence[str], window: str) -> str:
    return aggregate("sum", by, rate(REQUESTS, matchers(*selector_parts), window))


def error_ratio(selector_parts: Sequence[str], by: Sequence[str], window: str) -> str:
    """Server-side failures over all answered requests (both counters exist at zero from
    the first scrape, so the ratio is 0, not empty, while nothing fails)."""
    failed = request_rate([*selector_parts, server_side()], by, window)
    return f"{failed} / {request_rate(selector_parts, by, window)}"
