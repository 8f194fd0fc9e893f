"""Errors raised while writing, reading, packing or moving bundles.

    NeofleetError
    └── BundleError
        ├── BundleFormatError          manifest or meta unreadable, unsafe file name
        ├── BundleIntegrityError       the files do not match the manifest
        │   ├── MissingFileError       listed, not present
        │   ├── UnexpectedFileError    present, not listed (or not a regular file)
        │   └── DigestMismatchError    size or sha256 differs
        └── RegistryError              talking to an OCI registry failed
            ├── ReferenceError_        malformed oci:// reference
            └── ArtifactDigestError    the registry served bytes whose digest is wrong
"""

from __future__ import annotations

from neofleet.errors import NeofleetError


class BundleError(NeofleetError):
    reason = "InvalidBundle"


class BundleFormatError(BundleError):
    reason = "InvalidBundle"


class BundleIntegrityError(BundleError):
    """A file of the bundle does not match the manifest; ``filename`` names it."""

    reason = "BundleIntegrity"

    def __init__(self, filename: str, message: str) -> None:
        super().__init__(f"{filename}: {message}")
        self.filename = filename


class MissingFileError(BundleIntegrityError):
    pass


class UnexpectedFileError(BundleIntegrityError):
    pass


class DigestMismatchError(BundleIntegrityError):
    pass


class RegistryError(BundleError):
    reason = "RegistryError"


class ReferenceError_(RegistryError):
    reason = "InvalidReference"


class ArtifactDigestError(RegistryError):
    reason = "DigestMismatch"
