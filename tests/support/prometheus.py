"""Re-exported from ``neofleet.sandbox.addons.prometheus`` (the demo uses it too)."""

from neofleet.sandbox.addons.prometheus import PrometheusServer, prometheus_binary

__all__ = ["PrometheusServer", "prometheus_binary"]
