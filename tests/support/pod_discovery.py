"""Re-exported from ``neofleet.sandbox.addons.discovery`` (the demo uses it too)."""

from neofleet.sandbox.addons.discovery import PodTargets

__all__ = ["PodTargets"]
