"""The generated files and where they go (``neofleet observe [--out DIR]``).

The chart reads both from ``charts/neofleet/files/``: the dashboard into a ConfigMap for
Grafana's sidecar, the rules as the ``spec`` of a PrometheusRule. A unit test fails when
the checked-in files differ from what this code writes.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path("charts/neofleet/files")
DASHBOARD_FILE = "grafana-dashboard.json"
RULES_FILE = "prometheus-rules.yaml"


def render() -> dict[str, str]:
    """File name -> text, exactly as written."""
    from neofleet.observe.dashboard import dashboard_json
    from neofleet.observe.rules import rules_yaml

    return {DASHBOARD_FILE: dashboard_json(), RULES_FILE: rules_yaml()}


def write_files(out: Path = DEFAULT_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
