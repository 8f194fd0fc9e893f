"""Leader election's decisions (pure) and its settings."""

from __future__ import annotations

import pytest

from neofleet.operator.leader import LeaseConfig, LeaseRecord, decide, micro_time
from neofleet.operator.main import lease_config


def record(holder: str | None, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, 3, "42")


def test_a_lease_is_created_renewed_taken_when_stale_or_free_and_otherwise_waited_for() -> None:
    assert decide(None, "me", 0) == "create"
    assert decide(record("me"), "me", 100) == "renew"
    assert decide(record("other"), "me", 14.9) == "wait"       # by our clock, not theirs
    assert decide(record("other"), "me", 15.1) == "take"
    assert decide(record(None), "me", 0) == "take"              # released on a clean stop
    assert decide(record(""), "me", 0) == "take"


def test_settings_are_checked_and_identities_are_unique() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseConfig("ns", "l", "me", lease_duration_s=10, renew_deadline_s=12)
    one, two = (lease_config("neofleet-system/neofleet-operator", "pod-a", 15) for _ in "ab")
    assert one.namespace == "neofleet-system" and one.name == "neofleet-operator"
    assert one.identity.startswith("pod-a_") and one.identity != two.identity
    assert one.renew_deadline_s == 10 and one.retry_period_s == 2
    for bad in ("no-slash", "/name", "ns/", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            lease_config(bad, None, 15)
    assert micro_time().endswith("Z") and len(micro_time().split(".")[1]) == 7
