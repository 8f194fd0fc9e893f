"""A rollout in progress asks to be reconciled again after ``requeue_s``; each reconcile run
by that timer must schedule the next one (the chain once stopped after one link, so a canary's
analysis waited for the 60 s resync instead of its 3 s interval)."""

from __future__ import annotations

import threading
import time

from neofleet.operator.deploy import DeploymentReconciler
from neofleet.operator.metrics import OperatorMetrics


def _reconciler(wishes: list[float | None], calls: list[float]) -> DeploymentReconciler:
    reconciler = DeploymentReconciler(kube=None, metrics=OperatorMetrics(), known={})  # type: ignore[arg-type]
    done = threading.Event()

    def fake_reconcile(namespace: str, name: str) -> float | None:
        calls.append(time.monotonic())
        wish = wishes.pop(0) if wishes else None
        if wish is None:
            done.set()
        return wish

    reconciler._reconcile = fake_reconcile  # type: ignore[method-assign]
    reconciler.done = done  # type: ignore[attr-defined]
    return reconciler


def test_every_requeued_reconcile_schedules_the_next() -> None:
    calls: list[float] = []
    reconciler = _reconciler([0.02, 0.02, 0.02, 0.02, None], calls)
    try:
        reconciler.reconcile("ns", "emd")
        assert reconciler.done.wait(10), f"the chain stopped after {len(calls)} reconciles"  # type: ignore[attr-defined]
        assert len(calls) == 5
    finally:
        reconciler.stop()


def test_a_newer_wish_replaces_a_pending_timer() -> None:
    """An event-driven reconcile that asks for a sooner look wins over a later pending one."""
    calls: list[float] = []
    reconciler = _reconciler([30.0, 0.02, None], calls)
    try:
        reconciler.reconcile("ns", "emd")          # asks for 30 s
        reconciler.reconcile("ns", "emd")          # an event: asks for 0.02 s
        assert reconciler.done.wait(10)  # type: ignore[attr-defined]
        assert len(calls) == 3
    finally:
        reconciler.stop()


def test_stop_cancels_the_pending_timer() -> None:
    calls: list[float] = []
    reconciler = _reconciler([0.3, 0.3, None], calls)
    reconciler.reconcile("ns", "emd")
    reconciler.stop()
    time.sleep(0.6)
    assert len(calls) == 1


