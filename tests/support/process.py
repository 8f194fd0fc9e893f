"""Re-exported from ``neofleet.sandbox.addons.localserver`` (the demo uses it too)."""

from neofleet.sandbox.addons.localserver import LocalServer, find_binary, free_port

__all__ = ["LocalServer", "find_binary", "free_port"]
