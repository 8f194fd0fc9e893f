"""Two operator replicas with leader election (what the chart runs with
``operator.replicas: 2``), as processes under the chart's RBAC on the real control plane:
only the Lease holder acts; when it is SIGKILLed the standby takes over within the lease
duration and acts; a clean stop hands the Lease back; a leader whose Lease is taken from
it stops acting and exits non-zero."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import processes
from tests.support.sandbox import wait_until

pytestmark = pytest.mark.integration
LEASE_NS, LEASE = "neofleet-system", "neofleet-operator"
GROUP, VERSION = "neofleet.io", "v1alpha1"


def _replica(kubeconfig: Path, log: Path, name: str) -> Any:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    liveness = f"http://127.0.0.1:{processes.free_port()}/healthz"
    return processes.start([sys.executable, "-m", "neofleet.cli", "operator",
                            "--compiler-image", "localhost/neofleet-compiler:leader",
                            "--leader-election-lease", f"{LEASE_NS}/{LEASE}",
                            "--leader-identity", name, "--lease-duration", "6",
                            "--liveness", liveness], log, env), liveness


def _holder(coordination: Any) -> str:
    from kubernetes.client.rest import ApiException

    try:
        return coordination.read_namespaced_lease(LEASE, LEASE_NS).spec.holder_identity or ""
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise


def _compilation_job(custom: Any, namespace: str, name: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "compilationjobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "file:///nonexistent/model.onnx", "framework": "onnx"},
                 "targets": [{"name": "cpu", "device": "x86_64"}],
                 "output": {"repository": "oci://127.0.0.1:1/leader"}}})


def _jobs(batch: Any, namespace: str, cj: str) -> int:
    return len(batch.list_namespaced_job(
        namespace, label_selector=f"neofleet.io/compilationjob={cj}").items)


def test_only_the_lease_holder_acts_and_a_standby_takes_over(
        kube_api: Any, namespace: str, sandbox_cluster: Any, crds_installed: None,
        tmp_path: Path) -> None:
    import urllib.request

    from kubernetes import client

    from neofleet.operator.rbac import manifests
    from neofleet.sandbox.kube import apply_all

    apply_all(kube_api, manifests())
    coordination = client.CoordinationV1Api(kube_api)
    custom, batch = client.CustomObjectsApi(kube_api), client.BatchV1Api(kube_api)
    kubeconfig = sandbox_cluster.operator_kubeconfig
    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "c")}
    a, _ = _replica(kubeconfig, logs["a"], "a")
    b = c = None
    try:
        wait_until(lambda: _holder(coordination).startswith("a_"), "replica a leads", 60,
                   lambda: logs["a"].read_text())
        b, b_liveness = _replica(kubeconfig, logs["b"], "b")
        wait_until(lambda: "standing by" in logs["b"].read_text(), "replica b stands by", 30,
                   lambda: logs["b"].read_text())
        with urllib.request.urlopen(b_liveness, timeout=5) as alive:
            assert alive.status == 200                   # a standby is alive, not acting
        _compilation_job(custom, namespace, "first")
        wait_until(lambda: _jobs(batch, namespace, "first") == 1, "a's Job", 60,
                   lambda: logs["a"].read_text())
        assert "first" in logs["a"].read_text() and "first" not in logs["b"].read_text()

        processes.signal_group(a.pid, 9)                  # the leader dies without a word
        a.wait(timeout=10)
        killed = time.monotonic()
        wait_until(lambda: _holder(coordination).startswith("b_"), "replica b takes over",
                   60, lambda: logs["b"].read_text())
        takeover_s = time.monotonic() - killed
        _compilation_job(custom, namespace, "second")
        wait_until(lambda: _jobs(batch, namespace, "second") == 1, "b's Job", 60,
                   lambda: logs["b"].read_text())
        assert _jobs(batch, namespace, "first") == 1      # adopted, not duplicated

        processes.stop_child(b)                           # SIGTERM: hands the lease back
        assert b.returncode == 0, logs["b"].read_text()
        assert _holder(coordination) == ""

        c, _ = _replica(kubeconfig, logs["c"], "c")
        wait_until(lambda: _holder(coordination).startswith("c_"), "replica c leads", 30,
                   lambda: logs["c"].read_text())
        lease = coordination.read_namespaced_lease(LEASE, LEASE_NS)
        lease.spec.holder_identity = "an-intruder"        # someone else holds it now
        coordination.replace_namespaced_lease(LEASE, LEASE_NS, lease)
        c.wait(timeout=30)
        assert c.returncode != 0 and "lost the lease" in logs["c"].read_text()
        print(f"\nleader election: standby took over {takeover_s:.1f} s after SIGKILL "
              "(lease 6 s)")
    finally:
        for process in (a, b, c):
            if process is not None:
                processes.stop_child(process)
        _release(coordination)


def _release(coordination: Any) -> None:
    from kubernetes.client.rest import ApiException

    try:
        coordination.delete_namespaced_lease(LEASE, LEASE_NS)
    except ApiException as exc:
        if exc.status != 404:
            raise
