"""Re-exported from ``neofleet.sandbox.addons.registry`` (the demo uses it too)."""

from neofleet.sandbox.addons.registry import RegistryServer, free_port, registry_binary

__all__ = ["RegistryServer", "free_port", "registry_binary"]
