"""The node agent's pure parts: pod → process plan, pod status, pools → Node objects."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox.agent.podplan import encode_configmap, image_kind, plan_pod
from neofleet.sandbox.agent.status import ContainerState, pod_phase, pod_status
from neofleet.sandbox.errors import PodSpecError
from neofleet.sandbox.pools import DEFAULT_POOLS, POOL_LABEL, node_manifest, node_names

HOST_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SECRET_OF_THE_HOST": "x"}


def pod(*containers: dict[str, Any], volumes: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "demo"}},
            "spec": {"containers": list(containers), "volumes": volumes or [],
                     "nodeName": "cpu-amd64-0", **spec}}


def no_objects(kind: str, namespace: str, name: str) -> None:
    return None


def objects(kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
    store = {("configmap", "ns", "cfg"): {"mode": b"fast", "threads": b"2"},
             ("secret", "ns", "creds"): {"token": b"s3cr3t"}}
    return store.get((kind, namespace, name))


def plan(p: dict[str, Any], ports: list[int] | None = None, lookup: Any = objects):
    return plan_pod(p, Path("/sb/pods/u-1"), ports or [], lookup, HOST_ENV)


@pytest.mark.parametrize(("image", "kind"), [
    ("ghcr.io/neofleet/neofleet-runtime:0.1.0", "neofleet"),
    ("registry.local:5000/x/neofleet-compiler@sha256:" + "a" * 64, "neofleet"),
    ("neofleet-operator", "neofleet"),
    ("busybox:1.36", "host"),
    ("sandbox.neofleet.io/host", "host"),
])
def test_image_kind_maps_known_images(image: str, kind: str) -> None:
    assert image_kind(image) == kind


def test_an_unknown_image_fails_like_an_image_pull() -> None:
    with pytest.raises(PodSpecError, match="cannot run image 'nginx:1.25'") as caught:
        image_kind("nginx:1.25")
    assert caught.value.reason == "ErrImagePull"


def test_neofleet_images_run_the_cli_of_the_agents_interpreter_with_ports_rewritten() -> None:
    container = {"name": "server", "image": "neofleet-runtime:0.1",
                 "args": ["serve", "/bundle", "--port", "8080", "--name", "m"],
                 "ports": [{"containerPort": 8080, "name": "http"}],
                 "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                    "periodSeconds": 2}}
    result = plan(pod(container), ports=[41000])
    argv = result.containers[0].argv
    assert argv[:3] == (sys.executable, "-m", "neofleet.cli")
    assert argv[3:] == ("serve", "/bundle", "--port", "41000", "--name", "m")
    assert result.ports == {8080: 41000}
    probe = result.containers[0].readiness
    assert probe is not None and (probe.kind, probe.port, probe.path, probe.period_s) == (
        "http", 41000, "/v2/health/ready", 2.0)
    assert result.containers[0].env["PORT"] == "41000"


def test_the_agents_interpreter_is_not_rewritten_when_it_lies_under_a_mount(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout under /tmp and a pod mounting an emptyDir at /tmp (found by CI)."""
    monkeypatch.setattr(sys, "executable", "/tmp/ci/.venv/bin/python")
    container = {"name": "server", "image": "neofleet-runtime:0.1",
                 "args": ["serve", "/tmp/bundle"],
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    argv = plan(pod(container, volumes=[{"name": "tmp", "emptyDir": {}}])).containers[0].argv
    assert argv == ("/tmp/ci/.venv/bin/python", "-m", "neofleet.cli", "serve",
                    "/sb/pods/u-1/volumes/tmp/bundle")


def test_only_listed_host_variables_reach_the_process() -> None:
    env = plan(pod({"name": "c", "image": "busybox", "command": ["true"]})).containers[0].env
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/root"}


def test_mount_and_termination_paths_are_rewritten_as_whole_words() -> None:
    container = {"name": "c", "image": "busybox",
                 "command": ["sh", "-c",
                             "cp /scratch/in /scratchy; echo ok > /dev/termination-log"],
                 "args": ["--output=/scratch/out", "/models/m.onnx"],
                 "env": [{"name": "WORK", "value": "/scratch"}],
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                                  {"name": "models", "mountPath": "/models", "subPath": "v1"}]}
    volumes = [{"name": "scratch", "emptyDir": {}},
               {"name": "models", "persistentVolumeClaim": {"claimName": "store"}}]
    result = plan(pod(container, volumes=volumes))
    c = result.containers[0]
    scratch = "/sb/pods/u-1/volumes/scratch"
    assert c.argv[2] == (f"cp {scratch}/in /scratchy; echo ok > "
                         "/sb/pods/u-1/containers/c/termination-log")
    assert c.argv[3] == f"--output={scratch}/out"
    assert c.argv[4] == "/sb/claims/ns/store/v1/m.onnx"
    assert c.env["WORK"] == scratch
    assert Path(scratch) in result.folders and Path("/sb/claims/ns/store") in result.folders


def test_configmap_and_secret_volumes_and_env_are_materialised() -> None:
    container = {"name": "c", "image": "busybox", "command": ["env"],
                 "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                 "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                          "key": "token"}}},
                         {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath":
                                                                    "metadata.name"}}},
                         {"name": "APP", "valueFrom": {"fieldRef": {
                             "fieldPath": "metadata.labels['app']"}}},
                         {"name": "BOTH", "value": "$(POD)-$(CFG_mode)"}]}
    volumes = [{"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "mode",
                                                                         "path": "m.txt"}]}},
               {"name": "sec", "secret": {"secretName": "creds"}}]
    result = plan(pod(container, volumes=volumes))
    env = result.containers[0].env
    assert (env["CFG_mode"], env["CFG_threads"], env["TOKEN"]) == ("fast", "2", "s3cr3t")
    assert (env["POD"], env["APP"], env["BOTH"]) == ("p", "demo", "p-fast")
    assert result.files == {Path("/sb/pods/u-1/volumes/conf/m.txt"): b"fast",
                            Path("/sb/pods/u-1/volumes/sec/token"): b"s3cr3t"}


@pytest.mark.parametrize(("p", "message"), [
    (pod({"name": "c", "image": "busybox", "command": ["true"]},
         volumes=[{"name": "h", "hostPath": {"path": "/etc"}}]), r"\['hostPath'\] volumes"),
    (pod({"name": "c", "image": "busybox", "command": ["true"]},
         volumes=[{"name": "v", "configMap": {"name": "missing"}}]), "configmap ns/missing"),
    (pod({"name": "c", "image": "busybox", "command": ["true"],
          "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}), "names no volume"),
    (pod({"name": "c", "image": "busybox"}), "host images need a command"),
    (pod({"name": "c", "image": "busybox", "command": ["true"]},
         initContainers=[{"name": "i"}]), "init containers"),
    (pod({"name": "c", "image": "busybox", "command": ["true"],
          "readinessProbe": {"httpGet": {"port": 9999}}}), "not a declared containerPort"),
    (pod({"name": "c", "image": "busybox", "command": ["true"],
          "env": [{"name": "X", "valueFrom": {"resourceFieldRef": {}}}]}), "not simulated"),
])
def test_what_cannot_be_simulated_is_refused_with_a_reason(p: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(PodSpecError, match=message) as caught:
        plan(p, lookup=no_objects)
    assert caught.value.reason == "CreateContainerConfigError"


def test_configmap_binary_data_is_decoded() -> None:
    assert encode_configmap({"a": "1"}, {"b": "AAE="}) == {"a": b"1", "b": b"\x00\x01"}


def state(kind: str, code: int | None = None, ready: bool = False,
          restarts: int = 0) -> ContainerState:
    return ContainerState(name="c", image="i", state=kind, exit_code=code, ready=ready,
                          restart_count=restarts, reason="Completed" if code == 0 else "Error")


@pytest.mark.parametrize(("states", "policy", "phase"), [
    ([state("waiting")], "Always", "Pending"),
    ([state("running")], "Never", "Running"),
    ([state("terminated", 0)], "Never", "Succeeded"),
    ([state("terminated", 0)], "OnFailure", "Succeeded"),
    ([state("terminated", 2)], "Never", "Failed"),
    ([state("terminated", 2)], "OnFailure", "Running"),
    ([state("terminated", 0), state("running")], "Never", "Running"),
    ([state("waiting", restarts=1)], "Always", "Running"),
])
def test_pod_phase_follows_the_kubelets_rules(states: list[ContainerState], policy: str,
                                              phase: str) -> None:
    assert pod_phase(states, policy) == phase


def test_pod_status_is_ready_only_when_every_container_is_and_keeps_transition_times() -> None:
    first = pod_status([state("running", ready=False)], "Always", "t0", "t1")
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["Ready"]["status"] == "False" and first["podIP"] == "127.0.0.1"
    second = pod_status([state("running", ready=True)], "Always", "t0", "t2", first)
    conditions = {c["type"]: c for c in second["conditions"]}
    assert conditions["Ready"] == {"type": "Ready", "status": "True", "lastProbeTime": None,
                                   "lastTransitionTime": "t2"}
    assert conditions["Initialized"]["lastTransitionTime"] == "t1"
    assert second["containerStatuses"][0]["state"] == {"running": {"startedAt": None}}


def test_a_terminated_container_reports_exit_code_and_message() -> None:
    done = state("terminated", 3)
    done.message = "boom"
    status = pod_status([done], "Never", "t0", "t1")
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert status["containerStatuses"][0]["state"]["terminated"]["message"] == "boom"


def test_default_pools_have_realistic_labels_capacity_and_taints() -> None:
    by_name = {p.name: p for p in DEFAULT_POOLS}
    cpu = node_manifest(by_name["cpu-amd64"], "cpu-amd64-0")
    assert cpu["metadata"]["labels"]["kubernetes.io/arch"] == "amd64"
    assert cpu["metadata"]["labels"]["feature.node.kubernetes.io/cpu-cpuid.AVX512F"] == "true"
    assert cpu["metadata"]["labels"][POOL_LABEL] == "cpu-amd64"
    arm = node_manifest(by_name["edge-arm64"], "edge-arm64-1")
    assert arm["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    assert arm["status"]["nodeInfo"]["architecture"] == "arm64"
    gpu = node_manifest(by_name["gpu-t4"], "gpu-t4-0")
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"
    assert (gpu["metadata"]["labels"]["nvidia.com/gpu.compute.major"],
            gpu["metadata"]["labels"]["nvidia.com/gpu.compute.minor"]) == ("7", "5")
    assert gpu["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present",
                                      "effect": "NoSchedule"}]
    assert node_names(by_name["edge-arm64"]) == ["edge-arm64-0", "edge-arm64-1"]


def test_a_pools_file_with_a_bad_quantity_is_refused_before_anything_starts(
        tmp_path: Path) -> None:
    from neofleet.sandbox.errors import StateError
    from neofleet.sandbox.pools import load_pools

    path = tmp_path / "pools.yaml"
    path.write_text("- name: broken\n  capacity: {cpu: lots}\n")
    with pytest.raises(StateError, match="cannot read pools"):
        load_pools(path)
    path.write_text("- name: a\n- name: a\n")
    with pytest.raises(StateError, match="pool names repeat"):
        load_pools(path)
    path.write_text("- name: gpu\n  nodes: 2\n  capacity: {nvidia.com/gpu: '4'}\n")
    assert load_pools(path)[0].capacity == {"nvidia.com/gpu": "4"}
