"""End-to-end fixtures: the CRDs installed in the session's sandbox cluster, and the
operator running as a separate process under exactly the RBAC the chart grants."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import processes
from neofleet.sandbox.cluster import Sandbox
from neofleet.sandbox.kube import apply_all

ROOT = Path(__file__).resolve().parents[2]
COMPILER_IMAGE = "localhost/neofleet-compiler:e2e"


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix`` (comment dropped), as argv."""
    import shlex

    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return shlex.split(line.split("#", 1)[0])
    raise AssertionError(f"the README no longer has a command starting {prefix!r}")


# How the README installs the CRDs on an API server older than 1.25, the sandbox's 1.20
CRD_INSTALL = "kubectl apply -f crds/ --validate=false"


@pytest.fixture(scope="session")
def crds_installed(kube_api: Any, sandbox_cluster: Sandbox) -> None:
    """The CRDs installed with the README's own kubectl command, from the repository root."""
    import subprocess

    from kubernetes import client

    done = subprocess.run(readme_command(CRD_INSTALL), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "KUBECONFIG": str(sandbox_cluster.kubeconfig)})
    assert done.returncode == 0, f"{CRD_INSTALL} failed:\n{done.stdout}{done.stderr}"
    apply_all(kube_api, [POD_MONITOR_CRD])
    ext = client.ApiextensionsV1Api(kube_api)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [any(c.type == "Established" and c.status == "True"
                      for c in (crd.status.conditions or []))
                  for crd in ext.list_custom_resource_definition().items
                  if crd.spec.group == "neofleet.io"]
        if len(states) == 2 and all(states):  # (the PodMonitor CRD is not waited for)
            return
        time.sleep(0.2)
    raise AssertionError("the neofleet CRDs were not established")


# The Prometheus Operator's PodMonitor kind, reduced to a schema that keeps every field
# (test stand-in: the real CRD is 1 MB of YAML from a release that cannot be fetched here).
# With it installed the operator creates a PodMonitor per EdgeModelDeployment.
POD_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "PodMonitor", "plural": "podmonitors",
                       "singular": "podmonitor", "listKind": "PodMonitorList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]}}


@dataclass(frozen=True)
class OperatorProcess:
    log: Path
    metrics_port: int
    liveness: str


@pytest.fixture(scope="module")
def operator_process(sandbox_cluster: Sandbox, kube_api: Any, crds_installed: None,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """`neofleet operator` as the ServiceAccount bound to neofleet.operator.rbac only; one
    per test module, so the chaos test's own operators never meet it."""
    from neofleet.operator.rbac import manifests

    apply_all(kube_api, manifests())
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(sandbox_cluster.operator_kubeconfig),
           "PYTHONUNBUFFERED": "1"}
    metrics_port = processes.free_port()
    liveness = f"http://127.0.0.1:{processes.free_port()}/healthz"
    process = processes.start([sys.executable, "-m", "neofleet.cli", "operator",
                               "--compiler-image", COMPILER_IMAGE, "--metrics-port",
                               str(metrics_port), "--liveness", liveness], log, env)
    try:
        time.sleep(1.0)
        assert process.poll() is None, log.read_text()
        yield OperatorProcess(log, metrics_port, liveness)
    finally:
        processes.stop_child(process)
        if os.environ.get("NEOFLEET_E2E_SHOW_LOGS"):
            print(log.read_text())
