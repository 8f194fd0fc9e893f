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
from neofleet.sandbox.kube import apply_all, load_manifests

ROOT = Path(__file__).resolve().parents[2]
COMPILER_IMAGE = "localhost/neofleet-compiler:e2e"


@pytest.fixture(scope="session")
def crds_installed(kube_api: Any) -> None:
    from kubernetes import client

    for path in sorted((ROOT / "crds").glob("*.yaml")):
        apply_all(kube_api, load_manifests(path))
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
