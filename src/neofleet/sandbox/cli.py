"""``neofleet sandbox up | down | status [--dir DIR]`` (registered by ``neofleet.cli``).

Nothing heavy is imported until a command runs: the kubernetes client is the sandbox's own
dependency (the ``sandbox`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from neofleet.errors import NeofleetError

DEFAULT_DIR = Path(".neofleet-sandbox")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except NeofleetError as exc:
        raise click.ClickException(f"{exc.reason}: {exc}") from exc


@click.group()
def sandbox() -> None:
    """A local sandbox fleet: a real Kubernetes control plane and simulated node pools."""


@sandbox.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=DEFAULT_DIR,
              show_default=True, help="Folder for the cluster's state, PKI, logs and pods.")
@click.option("--pools", type=click.Path(exists=True, path_type=Path),
              help="YAML list of node pools (default: cpu-amd64, edge-arm64, gpu-t4).")
@click.option("--rbac", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="RBAC manifests binding neofleet-system/neofleet-operator (repeatable).")
@click.option("--cache", type=click.Path(path_type=Path),
              help="Control-plane binary cache [default: ~/.cache/neofleet/control-plane].")
def up(folder: Path, pools: Path | None, rbac: tuple[Path, ...], cache: Path | None) -> None:
    """Build (once) and start the cluster; prints the kubeconfig path when pods are accepted."""
    from neofleet.sandbox import cluster

    with _one_line_errors():
        started = cluster.up(folder, pools, cache, list(rbac))
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in started.timings_s.items())
    click.echo(f"sandbox ready at {started.server} ({timings})", err=True)
    click.echo(f"operator (ServiceAccount) kubeconfig: {started.operator_kubeconfig}", err=True)
    click.echo(str(started.kubeconfig))


@sandbox.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=DEFAULT_DIR,
              show_default=True)
def down(folder: Path) -> None:
    """Stop every process of the sandbox (control plane, node agent, pods)."""
    from neofleet.sandbox import cluster

    with _one_line_errors():
        stopped = cluster.down(folder)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@sandbox.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=DEFAULT_DIR,
              show_default=True)
def status(folder: Path) -> None:
    """Print the sandbox's components as JSON; exit 1 when one is not running."""
    from neofleet.sandbox import cluster

    with _one_line_errors():
        report = cluster.status(folder)
    click.echo(json.dumps(report, indent=2))
    components = report["components"]
    assert isinstance(components, dict)
    if not all(c["running"] for c in components.values()):
        raise SystemExit(1)


@sandbox.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path),
              default=Path(".neofleet-demo"), show_default=True)
@click.option("--keep", is_flag=True, help="Keep everything running until Ctrl-C.")
def demo(folder: Path, keep: bool) -> None:
    """The whole story on this machine: sandbox, registry, Prometheus, the operator from the
    chart, a CompilationJob for three targets, an EdgeModelDeployment canary under traffic."""
    from neofleet.sandbox import demo as story

    with _one_line_errors():
        result = story.run(folder, keep, say=lambda line: click.echo(line))
    click.echo(json.dumps(result), err=True)
    why = story.failure(result)
    if why is not None:            # a story that did not end Healthy is a failed command
        raise click.ClickException(f"the demo failed: {why}")
