"""The neofleet bundle: a DLR-shaped directory selected by its manifest.

    bundle dir ── manifest.json   every file's size + sha256, backend, artifact
               ├─ compiled.meta   DLR keys + neofleet's compile record (meta.py)
               ├─ compiled_model.json   summary of the compiled graph
               └─ the backend's files   compiled.so | compiled.onnx | ...

``open_bundle`` verifies every digest before anything is parsed or loaded. ``pack``
makes a reproducible tarball; ``oci`` pushes and pulls bundles by digest.

Errors (see ``neofleet.bundle.errors``)::

    BundleError
    ├── BundleFormatError
    ├── BundleIntegrityError ── MissingFileError, UnexpectedFileError, DigestMismatchError
    └── RegistryError ── ReferenceError_, ArtifactDigestError
"""

from neofleet.bundle.errors import (
    ArtifactDigestError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    DigestMismatchError,
    MissingFileError,
    RegistryError,
    UnexpectedFileError,
)
from neofleet.bundle.layout import Bundle, open_bundle, write_bundle
from neofleet.bundle.manifest import MANIFEST_NAME, Manifest, verify_directory
from neofleet.bundle.meta import GRAPH_NAME, META_NAME, CompiledMeta, TensorSpec
from neofleet.bundle.pack import pack_bundle, unpack_bundle

__all__ = [
    "GRAPH_NAME",
    "MANIFEST_NAME",
    "META_NAME",
    "ArtifactDigestError",
    "Bundle",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "CompiledMeta",
    "DigestMismatchError",
    "Manifest",
    "MissingFileError",
    "RegistryError",
    "TensorSpec",
    "UnexpectedFileError",
    "open_bundle",
    "pack_bundle",
    "unpack_bundle",
    "verify_directory",
    "write_bundle",
]
