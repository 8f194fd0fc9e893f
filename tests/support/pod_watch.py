"""Re-exported from ``neofleet.sandbox.addons.podwatch``."""

from neofleet.sandbox.addons.podwatch import Pod, PodWatch, host_port, is_ready

__all__ = ["Pod", "PodWatch", "host_port", "is_ready"]
