"""Errors raised while loading or running a bundle.

    NeofleetError
    └── RuntimeModelError
        ├── IncompatibleBundleError   the bundle was built for another arch or device
        ├── BackendUnavailableError   the backend's library is not installed here
        ├── HardwareVerificationError a bundle built without its GPU gave wrong results
        │                             on this host's GPU (its verification samples)
        ├── InputError                wrong input name, count, shape or dtype
        │   (raised by the inference server, neofleet.runtime.server:)
        ├── ProtocolError             the request does not follow the Open Inference Protocol
        ├── PayloadTooLargeError      the body is over --max-body-bytes
        ├── ModelNotFoundError        no model (or version) of that name is served here
        ├── OverloadedError           --max-queue requests are already in flight
        ├── NotReadyError             still loading, or shutting down
        └── ServerConfigError         the serve options do not fit the bundle

``neofleet.runtime.server.status`` maps each to its HTTP status in one table.

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


class HardwareVerificationError(RuntimeModelError):
    reason = "HardwareVerificationFailed"


class InputError(RuntimeModelError):
    reason = "InvalidInput"


class ProtocolError(RuntimeModelError):
    reason = "InvalidRequest"


class PayloadTooLargeError(RuntimeModelError):
    reason = "PayloadTooLarge"


class ModelNotFoundError(RuntimeModelError):
    reason = "ModelNotFound"


class OverloadedError(RuntimeModelError):
    reason = "Overloaded"


class NotReadyError(RuntimeModelError):
    reason = "NotReady"


class ServerConfigError(RuntimeModelError):
    reason = "InvalidServerConfig"
