"""Status conditions and their finite set of reasons (documented in the README)."""

from __future__ import annotations

from collections.abc import Sequence

from neofleet.api.common import Condition

REASONS = {
    # CompilationJob
    "InvalidSpec": "the spec fails validation the apiserver cannot do (CEL rules on 1.20)",
    "UnknownTarget": "a target names a device that is not in the catalogue",
    "Pending": "no compile Job has started yet",
    "Compiling": "compile Jobs are running",
    "WaitingForNode": "a compile pod cannot be scheduled (e.g. no GPU node of that kind)",
    "AllTargetsSucceeded": "every target has a verified bundle pushed by digest",
    "SomeTargetsFailed": "at least one target failed; the others succeeded",
    "AllTargetsFailed": "every target failed",
    "TargetFailed": "a target's compile failed (its row says why)",
    "NoFailures": "no target has failed",
    "NotCompiling": "no compile Job is running",
    # EdgeModelDeployment
    "ArtifactsResolved": "every pool has an artifact whose target fits its nodes",
    "NoArtifactForPool": "no artifact fits a pool (the message names targets that would)",
    "NoNodesInPool": "target auto, but no node matches the pool's nodeSelector",
    "ArtifactsUnavailable": "the CompilationJob named in spec.model is missing or unfinished",
    "FirstDeployment": "the first revision is being created",
    "VerifyingOnHardware": "a bundle not verified at compile time runs on one pod first",
    "PodsNotReady": "runtime pods of the stable revision are not all ready",
    "RolloutInProgress": "a new revision is rolling out",
    "RolloutPaused": "the rollout waits (spec.paused, or a pause step until promoted)",
    "RolloutComplete": "the stable revision serves every pool",
    "AllPoolsReady": "every pool's runtime pods are ready",
    "RolledBack": "the canary was rolled back (failed analysis or abort)",
    "AnalysisFailed": "the canary failed its analysis; the rollout is halted",
}


def condition(kind: str, status: bool, reason: str, message: str, generation: int | None,
              now: str, previous: Sequence[Condition]) -> Condition:
    if reason not in REASONS:
        raise ValueError(f"undocumented condition reason {reason!r}")
    value = "True" if status else "False"
    old = next((c for c in previous if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    return Condition(type=kind, status=value, reason=reason, message=message,
                     observed_generation=generation, last_transition_time=since or now)
