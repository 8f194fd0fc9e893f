"""neofleet: an open, self-hosted SageMaker Neo + DLR for Kubernetes fleets.

Importing this package imports nothing heavy: the compiler, runtime backends and
operator load their dependencies lazily.
"""

__version__ = "0.1.0"
