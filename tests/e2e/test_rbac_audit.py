"""The operator's RBAC is exactly what it uses: after the e2e tests above ran the operator
(as its ServiceAccount, under ``neofleet.operator.rbac``) through CompilationJobs,
EdgeModelDeployments, rollouts, rollbacks, restarts and leader election, the API server's
audit log of that account shows no refused request, and every permission the chart grants
was used at least once. Runs last in the e2e tier (``runs_last``) and is skipped when the
tests that exercise the operator did not run in this session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.audit import events, granted, used

pytestmark = [pytest.mark.integration, pytest.mark.runs_last]
EXERCISING = ("test_compilationjob.py", "test_edgemodeldeployment.py", "test_chart_install.py",
              "test_operator_leader.py", "test_rollout_restart.py")


def test_the_operator_used_exactly_the_permissions_it_is_granted(
        request: pytest.FixtureRequest, sandbox_cluster: Any) -> None:
    from neofleet.operator.rbac import RULES, leader_election_rules

    ran = {item.path.name for item in request.session.items}
    if not set(EXERCISING) <= ran:
        pytest.skip(f"needs the e2e tests that exercise the operator: {sorted(EXERCISING)}")
    permissions, refused = used(events(sandbox_cluster.audit_log))
    assert not refused, "requests RBAC refused:\n" + "\n".join(refused)
    grants = granted([*RULES, *leader_election_rules()])
    assert permissions <= grants            # (RBAC enforces it; this says which)
    unused = grants - permissions
    assert not unused, f"granted but never used by the e2e tests: {sorted(unused)}"
    print(f"\nRBAC audit: {len(permissions)} permissions used, all {len(grants)} granted "
          "ones exercised, none refused")
