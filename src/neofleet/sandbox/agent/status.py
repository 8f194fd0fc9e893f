"""The pod status a kubelet would report, from the states of the pod's processes (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TERMINATION_MESSAGE = 4096   # bytes, as the kubelet reads terminationMessagePath


@dataclass
class ContainerState:
    """What the runner knows about one container; mutated only by its runner thread."""

    name: str
    image: str
    state: str = "waiting"            # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    ready: bool = False
    restart_count: int = 0
    last_terminated: dict[str, Any] | None = field(default=None)

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name, "image": self.image, "imageID": "", "ready": self.ready,
            "restartCount": self.restart_count, "started": self.state == "running",
            "state": {self.state: self._state_detail()},
        }
        if self.last_terminated:
            status["lastState"] = {"terminated": self.last_terminated}
        return status

    def _state_detail(self) -> dict[str, Any]:
        if self.state == "running":
            return {"startedAt": self.started_at}
        if self.state == "terminated":
            detail = {"exitCode": self.exit_code, "reason": self.reason,
                      "startedAt": self.started_at, "finishedAt": self.finished_at}
            if self.message:
                detail["message"] = self.message
            return detail
        detail = {"reason": self.reason}
        if self.message:
            detail["message"] = self.message
        return detail


def pod_phase(containers: Sequence[ContainerState], restart_policy: str) -> str:
    """Pending, Running, Succeeded or Failed, by the kubelet's rules for these states."""
    if all(c.state == "terminated" for c in containers):
        if all(c.exit_code == 0 for c in containers):
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    if any(c.state == "running" or c.restart_count > 0 for c in containers):
        return "Running"
    return "Pending"


def pod_status(containers: Sequence[ContainerState], restart_policy: str, start_time: str,
               now: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``status`` to patch onto the Pod."""
    phase = pod_phase(containers, restart_policy)
    ready = phase == "Running" and all(c.ready for c in containers)
    started = phase != "Pending"
    old = {c["type"]: c for c in (previous or {}).get("conditions", [])}
    conditions = [_condition(kind, value, now, old)
                  for kind, value in (("Initialized", True), ("Ready", ready),
                                      ("ContainersReady", ready), ("PodScheduled", True))]
    status: dict[str, Any] = {
        "phase": phase, "conditions": conditions, "hostIP": "127.0.0.1",
        "startTime": start_time, "qosClass": (previous or {}).get("qosClass", "BestEffort"),
        "containerStatuses": [c.as_status() for c in containers],
    }
    if started:
        status["podIP"] = "127.0.0.1"
        status["podIPs"] = [{"ip": "127.0.0.1"}]
    return status


def _condition(kind: str, value: bool, now: str,
               old: dict[str, dict[str, Any]]) -> dict[str, Any]:
    status = "True" if value else "False"
    previous = old.get(kind, {})
    since = previous.get("lastTransitionTime") if previous.get("status") == status else now
    return {"type": kind, "status": status, "lastProbeTime": None,
            "lastTransitionTime": since or now}


def termination_message(raw: bytes) -> str:
    """The last 4096 bytes of the termination-message file, as the kubelet keeps them."""
    return raw[-MAX_TERMINATION_MESSAGE:].decode("utf-8", errors="replace")
