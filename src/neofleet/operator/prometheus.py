"""Instant PromQL queries for canary analysis (the operator's only Prometheus client).

A query that errors, or returns no sample, gives None: the analysis counts that as a
failed measurement and says so in the status.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request

LOG = logging.getLogger("neofleet.operator")


def query_scalar(base_url: str, expr: str, timeout_s: float = 5.0) -> float | None:
    """The first sample's value of an instant query, or None (no data, NaN or an error)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            doc = json.loads(response.read())
    except (OSError, ValueError) as exc:
        LOG.warning("prometheus query failed (%s): %s", exc, expr)
        return None
    result = doc.get("data", {}).get("result") or []
    if doc.get("status") != "success" or not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None
