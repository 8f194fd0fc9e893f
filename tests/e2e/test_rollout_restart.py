"""An operator killed (SIGKILL) in the middle of a canary rollout and started again
resumes the same step: the rollout's state lives in the EdgeModelDeployment's status and
its workloads have deterministic names, so nothing is recreated or restarted; traffic
keeps flowing without a failed request while no operator runs."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import processes
from tests.e2e.test_edgemodeldeployment import (
    BODY,
    CPU,
    GROUP,
    PLURAL,
    VERSION,
    custom,
    emd,
    linear_onnx,
    push,
    status_of,
)
from tests.support.sandbox import wait_until

pytestmark = pytest.mark.integration


def _operator(kubeconfig: Path, log: Path, metrics_port: int) -> Any:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    return processes.start([sys.executable, "-m", "neofleet.cli", "operator",
                            "--compiler-image", "localhost/neofleet-compiler:restart",
                            "--metrics-port", str(metrics_port)], log, env)


def _reports_paused(metrics_port: int, namespace: str) -> bool:
    """The operator has reconciled the EdgeModelDeployment: its phase gauge says Paused."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return False
    from prometheus_client.parser import text_string_to_metric_families

    return any(sample.labels == {"namespace": namespace, "name": "resume", "phase": "Paused"}
               and sample.value == 1.0
               for family in text_string_to_metric_families(text)
               if family.name == "neofleet_edgemodeldeployment_phase"
               for sample in family.samples)


def _workloads(api: Any, namespace: str) -> dict[str, int]:
    from kubernetes import client

    found = client.AppsV1Api(api).list_namespaced_deployment(
        namespace, label_selector="neofleet.io/edgemodeldeployment=resume").items
    return {d.metadata.name: d.spec.replicas for d in found}


def test_an_operator_restarted_mid_rollout_resumes_the_same_step(
        kube_api: Any, namespace: str, registry: Any, sandbox_cluster: Any,
        crds_installed: None, tmp_path: Path) -> None:
    from neofleet.operator.rbac import manifests
    from neofleet.sandbox.kube import apply_all
    from tests.support.traffic import TrafficDriver

    apply_all(kube_api, manifests())
    kubeconfig = sandbox_cluster.operator_kubeconfig
    operator = _operator(kubeconfig, tmp_path / "first.log", processes.free_port())
    try:
        v1 = push(tmp_path, registry, "resume-v1", linear_onnx(1.0))
        v2 = push(tmp_path, registry, "resume-v2", linear_onnx(1.0 + 1e-6))
        cpu = {**CPU, "replicas": 4}
        custom(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL,
            emd("resume", [{"target": "x86_64-avx512", "uri": v1}], [cpu]))
        wait_until(lambda: status_of(kube_api, namespace, "resume").get("phase") == "Healthy",
                   "the first revision", 240)
        with TrafficDriver(kube_api, namespace, "neofleet.io/edgemodeldeployment=resume",
                           "resume", BODY) as traffic:
            rollout = {"strategy": "Canary", "steps": [
                {"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]}
            custom(kube_api).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "resume",
                {"spec": {"model": {"artifacts": [{"target": "x86_64-avx512", "uri": v2}]},
                          "rollout": rollout}})
            wait_until(lambda: status_of(kube_api, namespace, "resume").get("phase")
                       == "Paused", "the canary to pause at step 1", 240)
            before, sizes = status_of(kube_api, namespace, "resume"), _workloads(kube_api,
                                                                                 namespace)
            os.killpg(operator.pid, signal.SIGKILL)
            operator.wait(timeout=10)
            time.sleep(3)                                   # no operator at all for a while
            port = processes.free_port()
            operator = _operator(kubeconfig, tmp_path / "second.log", port)
            wait_until(lambda: _reports_paused(port, namespace),
                       "the restarted operator to reconcile the EdgeModelDeployment", 120,
                       lambda: (tmp_path / "second.log").read_text()[-3000:])
            after = status_of(kube_api, namespace, "resume")
            assert after["phase"] == "Paused" and after["currentStep"] == 1
            assert after["canaryRevision"] == before["canaryRevision"]
            assert after["rollout"]["startedTime"] == before["rollout"]["startedTime"]
            assert _workloads(kube_api, namespace) == sizes == {
                f"resume-cpu-{before['stableRevision']}": 3,
                f"resume-cpu-{before['canaryRevision']}": 1}
            custom(kube_api).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "resume",
                {"metadata": {"annotations": {"neofleet.io/promote": "1"}}})
            wait_until(lambda: (s := status_of(kube_api, namespace, "resume")).get(
                "currentStep") == 3 and s.get("phase") == "Paused", "step 3", 240)
            custom(kube_api).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "resume",
                {"metadata": {"annotations": {"neofleet.io/promote": "full"}}})
            wait_until(lambda: status_of(kube_api, namespace, "resume").get(
                "stableRevision") == before["canaryRevision"], "the promotion", 240)
            wait_until(lambda: {e.revision for e in traffic.endpoints()} ==
                       {before["canaryRevision"]}, "only the new revision to serve", 60)
        assert not traffic.failures(), traffic.summary()
    finally:
        processes.stop_child(operator)
