"""The sandbox fleet on the real control plane: schema validation, Jobs, Deployments,
scheduling by labels and GPU capacity, garbage collection, RBAC, clean shutdown.

The cluster is the session fixture ``sandbox_cluster`` (tests/support/sandbox.py); the
first run on a machine builds the control plane (~5 min), later runs reuse the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import processes
from neofleet.sandbox.agent.agent import PORTS_ANNOTATION
from tests.support.sandbox import pod_folder, wait_until

pytestmark = pytest.mark.integration
HOST_IMAGE = "busybox:1.36"


def core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def test_nodes_of_every_pool_are_ready_with_fresh_leases(kube_api: Any,
                                                         node_pools: Any) -> None:
    from kubernetes import client

    from neofleet.sandbox.pools import node_names

    nodes = {n.metadata.name: n for n in core(kube_api).list_node().items}
    assert set(nodes) == {name for pool in node_pools for name in node_names(pool)}
    assert set(nodes) == {"cpu-amd64-0", "cpu-amd64-1", "edge-arm64-0", "edge-arm64-1",
                          "gpu-t4-0"}
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready[0].status == "True"
    assert nodes["gpu-t4-0"].status.allocatable["nvidia.com/gpu"] == "1"
    leases = client.CoordinationV1Api(kube_api).list_namespaced_lease("kube-node-lease")
    assert {lease.spec.holder_identity for lease in leases.items} == set(nodes)
    now = datetime.now(UTC)
    assert all((now - lease.spec.renew_time).total_seconds() < 30 for lease in leases.items)


TEST_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.sandbox-test.neofleet.io"},
    "spec": {"group": "sandbox-test.neofleet.io", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "required": ["size"], "properties": {
                                   "size": {"type": "integer", "minimum": 1, "maximum": 8},
                                   "color": {"type": "string", "enum": ["red", "blue"]}}},
                               "status": {"type": "object", "properties": {
                                   "phase": {"type": "string"}}}}}}}]}}


def test_a_crd_schema_rejects_an_invalid_object(kube_api: Any, namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from neofleet.sandbox.kube import apply_all

    apply_all(kube_api, [json.loads(json.dumps(TEST_CRD))])
    custom = client.CustomObjectsApi(kube_api)
    args = ("sandbox-test.neofleet.io", "v1", namespace, "widgets")

    def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "sandbox-test.neofleet.io/v1", "kind": "Widget",
                "metadata": {"name": name}, "spec": spec}

    def established() -> bool:
        try:
            custom.create_namespaced_custom_object(*args, widget("ok", {"size": 2}))
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False

    wait_until(established, "the Widget CRD to serve", 30)
    for spec, field in (({"size": 9}, "spec.size"), ({"size": 1, "color": "green"},
                                                     "spec.color"), ({}, "spec.size")):
        with pytest.raises(ApiException) as caught:
            custom.create_namespaced_custom_object(*args, widget("bad", spec))
        assert caught.value.status == 422 and field in caught.value.body
    # the status subresource: a status write does not change spec, and vice versa
    custom.patch_namespaced_custom_object_status(*args, "ok", {"status": {"phase": "Done"}})
    stored = custom.get_namespaced_custom_object(*args, "ok")
    assert stored["status"] == {"phase": "Done"} and stored["spec"] == {"size": 2}


def job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": HOST_IMAGE,
                                "command": ["sh", "-c", script],
                                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {}}], **spec}}}}


def job_pod(api: Any, namespace: str, name: str) -> Any:
    pods = core(api).list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    return pods[0] if pods else None


def test_a_job_runs_as_a_process_and_reports_its_termination_message(
        kube_api: Any, namespace: str) -> None:
    from kubernetes import client

    batch = client.BatchV1Api(kube_api)
    script = ("echo hello > /scratch/f && test \"$(cat /scratch/f)\" = hello && "
              "printf '{\"ok\": true}' > /dev/termination-log")
    batch.create_namespaced_job(namespace, job("works", script))
    batch.create_namespaced_job(namespace, job("fails", "echo broken > /dev/termination-log; "
                                               "exit 3"))
    wait_until(lambda: batch.read_namespaced_job_status("works", namespace).status.succeeded,
               "Job works to succeed", 60)
    pod = job_pod(kube_api, namespace, "works")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        0, "Completed", '{"ok": true}')
    wait_until(lambda: batch.read_namespaced_job_status("fails", namespace).status.failed,
               "Job fails to fail", 60)
    failed = job_pod(kube_api, namespace, "fails").status
    assert failed.phase == "Failed"
    assert failed.container_statuses[0].state.terminated.exit_code == 3
    assert failed.container_statuses[0].state.terminated.message == "broken\n"


def http_deployment(name: str, pool: str, replicas: int) -> dict[str, Any]:
    server = "exec python3 -m http.server --bind 127.0.0.1 $PORT"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "nodeSelector": {"neofleet.io/pool": pool},
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "web", "image": HOST_IMAGE,
                                         "command": ["sh", "-c", server],
                                         "ports": [{"containerPort": 8080, "name": "http"}],
                                         "readinessProbe": {"httpGet": {"path": "/",
                                                                        "port": "http"},
                                                            "periodSeconds": 1}}]}}}}


def test_a_deployment_becomes_ready_on_its_pool_and_is_garbage_collected(
        kube_api: Any, namespace: str) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, http_deployment("web", "edge-arm64", 2))
    wait_until(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas
               == 2, "2 ready replicas", 60)
    pods = core(kube_api).list_namespaced_pod(namespace, label_selector="app=web").items
    assert sorted(p.spec.node_name for p in pods)[0].startswith("edge-arm64-")
    assert all(p.spec.node_name.startswith("edge-arm64-") for p in pods)
    pids = []
    for pod in pods:
        port = json.loads(pod.metadata.annotations[PORTS_ANNOTATION])["8080"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
        pids.append(int((pod_folder(pod) / "containers" / "web" / "pid").read_text()))
    assert len(set(pids)) == 2
    apps.delete_namespaced_deployment("web", namespace)   # background propagation
    wait_until(lambda: not core(kube_api).list_namespaced_pod(
        namespace, label_selector="app=web").items, "the pods to be collected", 60)
    assert not apps.list_namespaced_replica_set(namespace).items
    wait_until(lambda: not any(processes.alive(pid, "http.server") for pid in pids),
               "the pod processes to stop", 30)


def gpu_pod(name: str, gpus: int = 1) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"automountServiceAccountToken": False, "containers": [{
                "name": "main", "image": HOST_IMAGE, "command": ["sleep", "600"],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def test_a_gpu_pod_lands_only_on_the_gpu_pool_and_capacity_is_enforced(
        kube_api: Any, namespace: str) -> None:
    api = core(kube_api)
    api.create_namespaced_pod(namespace, gpu_pod("gpu-a"))
    running = wait_until(lambda: _phase(api, namespace, "gpu-a") == "Running",
                         "the GPU pod to run", 60)
    assert running
    assert api.read_namespaced_pod("gpu-a", namespace).spec.node_name == "gpu-t4-0"
    api.create_namespaced_pod(namespace, gpu_pod("gpu-b"))
    unschedulable = wait_until(lambda: _scheduled_condition(api, namespace, "gpu-b"),
                               "the second GPU pod to be refused", 60)
    assert unschedulable.reason == "Unschedulable"
    assert "nvidia.com/gpu" in unschedulable.message
    # CPU pods never land on the tainted GPU pool
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"nodeSelector": {"neofleet.io/pool": "gpu-t4"},
                      "automountServiceAccountToken": False,
                      "containers": [{"name": "main", "image": HOST_IMAGE,
                                      "command": ["sleep", "600"]}]}}
    api.create_namespaced_pod(namespace, plain)
    refused = wait_until(lambda: _scheduled_condition(api, namespace, "plain"),
                         "the CPU pod to be refused by the GPU taint", 60)
    assert "taint" in refused.message


def _phase(api: Any, namespace: str, name: str) -> str:
    return str(api.read_namespaced_pod(name, namespace).status.phase)


def _scheduled_condition(api: Any, namespace: str, name: str) -> Any:
    for condition in api.read_namespaced_pod(name, namespace).status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return condition
    return None


def test_an_unknown_image_is_reported_like_a_failed_pull(kube_api: Any, namespace: str) -> None:
    api = core(kube_api)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
           "spec": {"automountServiceAccountToken": False,
                    "containers": [{"name": "main", "image": "nginx:1.25"}]}}
    api.create_namespaced_pod(namespace, pod)

    def waiting() -> Any:
        statuses = api.read_namespaced_pod("nginx", namespace).status.container_statuses
        return statuses and statuses[0].state.waiting

    reason = wait_until(waiting, "the pull failure", 60)
    assert reason.reason == "ErrImagePull" and "nginx:1.25" in reason.message
    assert _phase(api, namespace, "nginx") == "Pending"


def test_the_operator_kubeconfig_has_only_the_rbac_granted(
        kube_api: Any, sandbox_cluster: Any, namespace: str) -> None:
    """ConfigMaps: nothing the operator's own RBAC grants (other tests may bind it)."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from tests.support.audit import PROBE_AGENT

    probe = config.new_client_from_config(str(sandbox_cluster.operator_kubeconfig))
    probe.user_agent = PROBE_AGENT              # not the operator's (tests/e2e audit)
    operator = core(probe)
    with pytest.raises(ApiException) as caught:
        operator.list_namespaced_config_map(namespace)
    assert caught.value.status == 403 and "neofleet-operator" in caught.value.body
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "read-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "neofleet-operator",
                      "namespace": "neofleet-system"}]})
    wait_until(lambda: _allowed(operator, namespace), "the binding to take effect", 10)
    with pytest.raises(ApiException) as still:
        operator.list_namespaced_secret(namespace)
    assert still.value.status == 403


def _allowed(api: Any, namespace: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        api.list_namespaced_config_map(namespace)
        return True
    except ApiException:
        return False


def test_cli_up_status_down_leaves_no_process_or_port(tmp_path: Path,
                                                     sandbox_cluster: Any) -> None:
    """A second sandbox through the command line (binaries are cached by now)."""
    pools = tmp_path / "pools.yaml"
    pools.write_text("- name: tiny\n  nodes: 1\n")
    folder = tmp_path / "sb"
    cli = [sys.executable, "-m", "neofleet.cli", "sandbox"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up = subprocess.run([*cli, "up", "--dir", str(folder), "--pools", str(pools)],
                        capture_output=True, text=True, timeout=300, env=env, check=False)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == str(folder.resolve() / "kubeconfig")
        assert "sandbox ready at https://127.0.0.1:" in up.stderr
        state = json.loads(subprocess.run([*cli, "status", "--dir", str(folder)],
                                          capture_output=True, text=True, check=True).stdout)
        components = state["components"]
        assert set(components) == {"etcd", "kube-apiserver", "kube-controller-manager",
                                   "kube-scheduler", "agent"}
        assert all(c["running"] for c in components.values())
        again = subprocess.run([*cli, "up", "--dir", str(folder), "--pools", str(pools)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(folder)], capture_output=True,
                              text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    for name, component in components.items():
        assert not processes.alive(component["pid"], ""), name
        assert not component["port"] or not processes.port_open(component["port"]), name
    gone = subprocess.run([*cli, "status", "--dir", str(folder)], capture_output=True,
                          text=True, check=False)
    assert gone.returncode == 1 and "no sandbox" in gone.stderr


def test_a_failed_up_stops_what_it_started(tmp_path: Path, sandbox_cluster: Any) -> None:
    """The agent dies registering a Node the apiserver rejects (a label value with a
    space): `up` fails with the agent's log and leaves no process behind."""
    from neofleet.sandbox import cluster
    from neofleet.sandbox.errors import ClusterError

    pools = tmp_path / "pools.yaml"
    pools.write_text("- name: broken\n  labels: {example.com/owner: 'two words'}\n")
    folder = tmp_path / "sb"
    with pytest.raises(ClusterError, match="the node agent exited") as caught:
        cluster.up(folder, pools)
    assert "agent.log" in str(caught.value)
    assert not (folder / "state.json").exists()
    assert not _processes_mentioning(str(folder))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found
