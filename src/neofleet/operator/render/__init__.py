"""Desired objects → Kubernetes manifest dicts (pure)."""
