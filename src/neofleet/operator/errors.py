"""Typed errors of the operator (hierarchy in ``neofleet.operator``)."""

from __future__ import annotations

from neofleet.errors import NeofleetError


class OperatorError(NeofleetError):
    reason = "OperatorError"


class UntrustedResultError(OperatorError):
    """A compile pod reported success without a digest, or wrote something unreadable."""

    reason = "ResultUntrusted"
