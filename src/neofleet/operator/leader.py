"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two operator replicas never
both act (client-go's rules: a lease is free when its holder is empty or its record has
not changed for ``leaseDurationSeconds`` by *our* clock, never by comparing clocks).

``decide`` is pure; ``LeaderElector`` runs it against the API through ``kube.Kube``:
``acquire`` blocks until this process holds the lease, ``keep`` renews it every
``retry_period_s`` in a thread and calls ``on_lost`` when no renewal succeeded for
``renew_deadline_s`` (shorter than the lease, so the loser stops before anyone else may
take over), ``release`` hands it back on a clean stop so a standby takes over at once.

Errors::

    LeaderElectionError      -- the lease could not be read or written (API refused)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

LOG = logging.getLogger(__name__)


class LeaderElectionError(RuntimeError):
    """The lease could not be read or written."""


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("leader election needs 0 < retry period < renew deadline "
                             f"< lease duration, got {self.retry_period_s}, "
                             f"{self.renew_deadline_s}, {self.lease_duration_s}")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    duration_s: int
    transitions: int
    resource_version: str


Action = Literal["create", "renew", "take", "wait"]


def decide(record: LeaseRecord | None, identity: str, unchanged_for_s: float) -> Action:
    """What to do with the lease as read; ``unchanged_for_s`` is how long (by this
    process's clock) the record has been the same."""
    if record is None:
        return "create"
    if record.holder == identity:
        return "renew"
    if not record.holder or unchanged_for_s > record.duration_s:
        return "take"
    return "wait"


def micro_time() -> str:
    """Now as a MicroTime, as the API server writes it (RFC 3339, six fractional digits)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseApi(Protocol):
    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None: ...

    def write_lease(self, namespace: str, name: str, spec: dict[str, Any],
                    resource_version: str | None) -> bool: ...


class LeaderElector:
    def __init__(self, api: LeaseApi, config: LeaseConfig) -> None:
        self.api, self.config = api, config
        self.leading = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._seen: tuple[LeaseRecord | None, float] = (None, time.monotonic())
        self._thread: threading.Thread | None = None

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False)."""
        announced = None
        while not (stop is not None and stop.is_set()):
            if self.try_once():
                LOG.info("leading: lease %s/%s held by %s", self.config.namespace,
                         self.config.name, self.config.identity)
                return True
            holder = self._seen[0].holder if self._seen[0] else None
            if holder != announced:
                LOG.info("standing by: lease %s/%s is held by %s", self.config.namespace,
                         self.config.name, holder)
                announced = holder
            (stop or self._stop).wait(self.config.retry_period_s)
        return False

    def try_once(self) -> bool:
        """One read and at most one write; True when this process holds the lease after."""
        record = self.api.get_lease(self.config.namespace, self.config.name)
        seen, since = self._seen
        if record != seen:
            self._seen = (record, time.monotonic())
            since = self._seen[1]
        action = decide(record, self.config.identity, time.monotonic() - since)
        if action == "wait":
            return False
        now = micro_time()
        spec: dict[str, Any] = {"holderIdentity": self.config.identity,
                                "leaseDurationSeconds": self.config.lease_duration_s,
                                "renewTime": now}
        if action != "renew":
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (record.transitions + 1) if record else 0
        version = record.resource_version if record else None
        ok = self.api.write_lease(self.config.namespace, self.config.name, spec, version)
        if ok:
            self.leading.set()
        return ok

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew in a thread; ``on_lost`` once renewals failed for the renew deadline."""
        def renew_forever() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(self.config.retry_period_s):
                try:
                    if self.try_once():
                        last_ok = time.monotonic()
                        continue
                except LeaderElectionError as exc:
                    LOG.warning("renewing the lease failed: %s", exc)
                if time.monotonic() - last_ok > self.config.renew_deadline_s or \
                        self._held_by_other():
                    LOG.error("lost the lease %s/%s; stopping", self.config.namespace,
                              self.config.name)
                    self.leading.clear()
                    self.lost.set()
                    on_lost()
                    return
        self._thread = threading.Thread(target=renew_forever, name="lease", daemon=True)
        self._thread.start()

    def _held_by_other(self) -> bool:
        record = self._seen[0]
        return record is not None and bool(record.holder) and \
            record.holder != self.config.identity

    def release(self) -> None:
        """Stop renewing; if still leading, empty the holder so a standby takes over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.retry_period_s + 5)
        if not self.leading.is_set() or self.lost.is_set():
            return
        try:
            current = self.api.get_lease(self.config.namespace, self.config.name)
            if current is not None and current.holder == self.config.identity:
                self.api.write_lease(self.config.namespace, self.config.name,
                                     {"holderIdentity": None, "leaseDurationSeconds": 1,
                                      "renewTime": micro_time()},
                                     current.resource_version)
        except LeaderElectionError as exc:
            LOG.warning("could not release the lease (%s); it expires in %s s", exc,
                        self.config.lease_duration_s)
        self.leading.clear()
