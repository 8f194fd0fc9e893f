"""The permissions a ServiceAccount used, read from the sandbox API server's audit log
(JSON lines at ``Metadata`` level; ``cluster.py`` logs the operator's account only)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Permission = tuple[str, str, str]     # (apiGroup, resource[/subresource], verb)
# the user agent of tests that use the operator's account on purpose to probe its RBAC
# (their refused and extra requests are not the operator's)
PROBE_AGENT = "neofleet-tests/rbac-probe"


def events(log: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(log.parent.glob(log.name + "*")):   # the log and its backup
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def used(records: Iterable[dict[str, Any]]) -> tuple[set[Permission], list[str]]:
    """(the resource permissions RBAC allowed and the account used, the requests RBAC
    refused)."""
    found: set[Permission] = set()
    refused: list[str] = []
    for record in records:
        ref = record.get("objectRef")
        if not ref or record.get("userAgent") == PROBE_AGENT:   # discovery; probes
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource")
                                      else "")
        permission = (ref.get("apiGroup", ""), resource, record["verb"])
        # RBAC's own verdict (a 403 can also come from admission: a namespace being deleted)
        decision = (record.get("annotations") or {}).get("authorization.k8s.io/decision")
        if decision == "forbid":
            refused.append(f"{permission} {record.get('requestURI')}")
        else:
            found.add(permission)
    return found, refused


def granted(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}
