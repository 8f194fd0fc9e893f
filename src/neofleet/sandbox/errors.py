"""Typed errors of the sandbox (hierarchy in ``neofleet.sandbox``)."""

from __future__ import annotations

from neofleet.errors import NeofleetError


class SandboxError(NeofleetError):
    """Base class of every sandbox error."""

    reason = "SandboxError"


class BuildError(SandboxError):
    """The control-plane binaries could not be built."""

    reason = "ControlPlaneBuildFailed"


class ClusterError(SandboxError):
    """A component did not start, or the cluster never became ready."""

    reason = "ClusterNotReady"


class StateError(SandboxError):
    """The sandbox folder holds no cluster where one is needed, or a running one."""

    reason = "SandboxState"


class PodSpecError(SandboxError):
    """A pod asks for something the node agent cannot simulate (the message says what)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason   # the container waiting reason a kubelet would report
