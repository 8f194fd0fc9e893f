"""Errors raised while loading or running a bundle.

    NeofleetError
    └── RuntimeModelError
        ├── IncompatibleBundleError   the bundle was built for another arch or device
        ├── BackendUnavailableError   the backend's library is not installed here
        └── InputError                wrong input name, count, shape or dtype

A bundle that fails verification raises ``neofleet.bundle.BundleError`` before any of
these: nothing is loaded from an unverified bundle.
"""

from __future__ import annotations

from neofleet.errors import NeofleetError


class RuntimeModelError(NeofleetError):
    reason = "RuntimeError"


class IncompatibleBundleError(RuntimeModelError):
    reason = "IncompatibleBundle"


class BackendUnavailableError(RuntimeModelError):
    reason = "BackendUnavailable"


class InputError(RuntimeModelError):
    reason = "InvalidInput"
