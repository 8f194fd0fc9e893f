"""Re-exported from ``neofleet.sandbox.addons.traffic`` (the demo uses it too)."""

from neofleet.sandbox.addons.traffic import Attempt, Endpoint, TrafficDriver

__all__ = ["Attempt", "Endpoint", "TrafficDriver"]
