"""Observability for a neofleet install: the Grafana dashboard and the Prometheus alert
rules, generated from code (``neofleet observe`` writes them into the Helm chart).

- ``promql``: the metric names, label sets and PromQL building blocks both share;
- ``dashboard``: the dashboard, built with grafana-foundation-sdk (the ``observe`` extra);
- ``rules``: the alert rules as a Prometheus rule-groups document;
- ``generate``: the two files' text and where they go.

Nothing here is imported by ``neofleet`` itself, and importing this package does nothing.
"""
