"""The node agent's pure parts: pod → process plan, pod status, pools → Node objects."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox.agent.podplan import (
    Guest,
    PodPlan,
    encode_configmap,
    image_kind,
    kube_arch,
    needs_guest,
    plan_pod,
)
from neofleet.sandbox.agent.status import ContainerState, pod_phase, pod_status
from neofleet.sandbox.errors import PodSpecError
from neofleet.sandbox.pools import (
    DEFAULT_POOLS,
    POOL_LABEL,
    Pool,
    node_arch,
    node_manifest,
    node_names,
)

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


def test_a_mounts_host_path_is_not_rewritten_again_by_a_shorter_mount() -> None:
    """The pod folders live under /tmp here, and runtime pods mount /tmp: a cache mounted
    from a claim must reach the server as the claim's folder, once (found by the shared
    bundle cache, which silently became a per-pod folder)."""
    container = {"name": "server", "image": "neofleet-runtime:0.1",
                 "args": ["serve", "--cache-dir", "/var/cache/neofleet", "--x", "/tmp/y"],
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                  {"name": "cache", "mountPath": "/var/cache/neofleet"}]}
    volumes = [{"name": "tmp", "emptyDir": {}},
               {"name": "cache", "persistentVolumeClaim": {"claimName": "bundles"}}]
    result = plan_pod(pod(container, volumes=volumes), Path("/tmp/sb/pods/u-1"), [],
                      objects, HOST_ENV)
    assert result.containers[0].argv[3:] == (
        "serve", "--cache-dir", "/tmp/sb/claims/ns/bundles",
        "--x", "/tmp/sb/pods/u-1/volumes/tmp/y")


def test_lifecycle_hooks_are_refused_not_skipped() -> None:
    container = {"name": "web", "image": "busybox:1.36", "command": ["sleep", "1"],
                 "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}
    with pytest.raises(PodSpecError, match=r"lifecycle hooks .*\['web'\].* not simulated") \
            as caught:
        plan(pod(container))
    assert caught.value.reason == "CreateContainerConfigError"


QEMU_GUEST = Guest(python=("/usr/bin/qemu-aarch64-static", "-L", "/tmp/a64/sysroot",
                             "/tmp/a64/sysroot/usr/bin/python3.11"),
                   env={"PYTHONPATH": "/tmp/a64/neofleet-src/d:/tmp/a64/site-packages",
                        "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1", "LANG": "C.UTF-8",
                        "NEOFLEET_TVM_RUNTIME_LIB": "/tmp/a64/lib/libtvm_runtime.so"},
                   emulator="qemu-aarch64-static")
SERVE = {"name": "runtime", "image": "localhost/neofleet-runtime:e2e",
         "args": ["serve", "oci://127.0.0.1:5000/models/m@sha256:" + "a" * 64,
                  "--port", "8080", "--cache-dir", "/var/cache/neofleet"],
         "ports": [{"containerPort": 8080}],
         "env": [{"name": "TMPDIR", "value": "/tmp"},
                 {"name": "PYTHONPATH", "value": "/opt/app"}],
         "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/neofleet"},
                          {"name": "tmp", "mountPath": "/tmp"}]}
SERVE_VOLUMES = [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]


def arm_plan(p: dict[str, Any], guest: Callable[[str], Guest] | None = None,
             ports: list[int] | None = None) -> tuple[PodPlan, list[str]]:
    """plan_pod as the agent calls it on an x86_64 machine; which archs the guest was asked."""
    asked: list[str] = []

    def lookup(arch: str) -> Guest:
        asked.append(arch)
        assert guest is not None, "no guest expected"
        return guest(arch)

    arch = "arm64" if p["spec"]["nodeName"].startswith("edge-arm64") else "amd64"
    result = plan_pod(p, Path("/sb/pods/u-1"), ports or [], objects, HOST_ENV,
                      node_arch=arch, host_arch="amd64", guest=lookup)
    return result, asked


def qemu_stand_in(arch: str) -> Guest:
    return QEMU_GUEST


def test_an_arm64_nodes_neofleet_pod_runs_the_cli_on_the_emulated_python() -> None:
    result, asked = arm_plan(pod(SERVE, volumes=SERVE_VOLUMES, nodeName="edge-arm64-0"),
                             qemu_stand_in, ports=[41000])
    assert asked == ["arm64"]
    c = result.containers[0]
    # the guest's own paths live under /tmp here and are still never rewritten
    assert c.argv == (*QEMU_GUEST.python, "-m", "neofleet.cli", "serve",
                      "oci://127.0.0.1:5000/models/m@sha256:" + "a" * 64, "--port", "41000",
                      "--cache-dir", "/sb/pods/u-1/volumes/cache")
    assert c.emulator == "qemu-aarch64-static"
    # the pod's variables are rewritten as usual; what the emulated Python needs wins
    assert c.env == {"PATH": "/usr/bin:/bin", "HOME": "/root", "PORT": "41000",
                     "TMPDIR": "/sb/pods/u-1/volumes/tmp", **QEMU_GUEST.env}


def test_an_amd64_nodes_neofleet_pod_runs_the_cli_of_the_agents_interpreter() -> None:
    result, asked = arm_plan(pod(SERVE, volumes=SERVE_VOLUMES, nodeName="cpu-amd64-1"),
                             ports=[41000])
    assert asked == []
    c = result.containers[0]
    assert c.argv[:4] == (sys.executable, "-m", "neofleet.cli", "serve")
    assert c.emulator == ""
    assert c.env == {"PATH": "/usr/bin:/bin", "HOME": "/root", "PORT": "41000",
                     "TMPDIR": "/sb/pods/u-1/volumes/tmp", "PYTHONPATH": "/opt/app"}


def test_an_arm64_nodes_host_image_compile_pod_and_python_command() -> None:
    host = {"name": "sh", "image": "sandbox.neofleet.io/host", "command": ["sh", "-c", "true"]}
    result, asked = arm_plan(pod(host, nodeName="edge-arm64-1"))
    assert asked == [] and result.containers[0].argv == ("sh", "-c", "true")
    # an aarch64 target's compile pod lands on an arm64 node: the compiler's output does not
    # depend on its CPU (it cross-compiles and verifies under qemu), so it runs natively
    compile_pod = {"name": "compile", "image": "localhost/neofleet-compiler:e2e",
                   "args": ["compile-pod", "--result", "/dev/termination-log"]}
    result, asked = arm_plan(pod(compile_pod, nodeName="edge-arm64-0"))
    assert asked == [] and result.containers[0].argv[:4] == (
        sys.executable, "-m", "neofleet.cli", "compile-pod")
    python = {"name": "py", "image": "neofleet-runtime:1", "command": ["python3", "-c", "1"]}
    result, asked = arm_plan(pod(python, nodeName="edge-arm64-1"), qemu_stand_in)
    assert result.containers[0].argv == (*QEMU_GUEST.python, "-c", "1")


def test_an_arm64_nodes_neofleet_image_with_another_command_is_refused() -> None:
    shell = {"name": "sh", "image": "neofleet-runtime:1", "command": ["sh", "-c", "serve"]}
    with pytest.raises(PodSpecError, match="neofleet-runtime runs only neofleet or python "
                       r"\(under qemu-aarch64-static\); 'sh' would run on this machine's CPU"
                       ) as caught:
        arm_plan(pod(shell, nodeName="edge-arm64-0"), qemu_stand_in)
    assert caught.value.reason == "CreateContainerConfigError"


def test_without_a_usable_emulator_an_arm64_neofleet_pod_fails_and_says_what_to_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neofleet.sandbox.agent.guest import qemu_guest

    monkeypatch.setenv("NEOFLEET_AARCH64_PYTHON", str(tmp_path / "nothing"))
    with pytest.raises(PodSpecError, match="run scripts/setup-aarch64-python.sh") as caught:
        arm_plan(pod(SERVE, volumes=SERVE_VOLUMES, nodeName="edge-arm64-0"), qemu_guest,
                 ports=[1])
    assert caught.value.reason == "CreateContainerConfigError"
    assert "qemu-aarch64-static" in str(caught.value)


def fake_aarch64_home(root: Path, modules: tuple[str, ...]) -> Path:
    """The files find/locate_emulator look at (nothing here can run)."""
    (root / "sysroot" / "usr" / "bin").mkdir(parents=True)
    (root / "sysroot" / "usr" / "bin" / "python3.11").write_bytes(b"")
    (root / "lib").mkdir()
    (root / "lib" / "libtvm_runtime.so").write_bytes(b"")
    (root / "stamp").write_text("test\n")
    for module in modules:
        (root / "site-packages" / module).mkdir(parents=True)
    (root / "site-packages").mkdir(exist_ok=True)
    return root


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-aarch64-static"
    qemu.write_text("#!/bin/sh\nexit 1\n")
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return qemu


def test_an_environment_from_an_older_setup_script_is_refused_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_qemu: Path) -> None:
    from neofleet.sandbox.agent.guest import qemu_guest

    home = fake_aarch64_home(tmp_path / "a64", ("numpy", "pydantic", "onnxruntime"))
    monkeypatch.setenv("NEOFLEET_AARCH64_PYTHON", str(home))
    with pytest.raises(PodSpecError, match=r"lacks click, starlette, .*uvicorn.*"
                       r"run scripts/setup-aarch64-python.sh") as caught:
        qemu_guest("arm64")
    assert caught.value.reason == "CreateContainerConfigError"
    with pytest.raises(PodSpecError, match="emulates arm64 only"):
        qemu_guest("s390x")


def test_the_qemu_guest_is_the_compilers_emulated_python_with_a_copy_of_neofleet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_qemu: Path) -> None:
    from neofleet.emulation import SERVE_MODULES
    from neofleet.sandbox.agent.guest import qemu_guest

    home = fake_aarch64_home(tmp_path / "a64", SERVE_MODULES)
    monkeypatch.setenv("NEOFLEET_AARCH64_PYTHON", str(home))
    guest = qemu_guest("arm64")
    assert guest.python == (str(fake_qemu), "-L", str(home / "sysroot"),
                            str(home / "sysroot" / "usr" / "bin" / "python3.11"))
    package_root, site = guest.env["PYTHONPATH"].split(":")
    assert site == str(home / "site-packages")
    assert Path(package_root).parent == home / "neofleet-src"
    assert (Path(package_root) / "neofleet" / "cli.py").is_file()
    assert sorted(p.name for p in Path(package_root).iterdir()) == ["neofleet"]
    assert (guest.env["PYTHONNOUSERSITE"], guest.env["PYTHONSAFEPATH"]) == ("1", "1")
    assert guest.env["NEOFLEET_TVM_RUNTIME_LIB"] == str(home / "lib" / "libtvm_runtime.so")


@pytest.mark.parametrize(("image", "node", "emulated"), [
    ("neofleet-runtime:1", "arm64", True),
    ("ghcr.io/x/neofleet-runtime@sha256:" + "b" * 64, "arm64", True),
    ("neofleet-runtime:1", "amd64", False),
    ("neofleet-compiler:1", "arm64", False),
    ("neofleet-operator:1", "arm64", False),
    ("busybox:1.36", "arm64", False),
])
def test_only_the_runtime_image_runs_emulated_and_only_on_a_foreign_arch(
        image: str, node: str, emulated: bool) -> None:
    assert needs_guest(image, node, "amd64") is emulated


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64"),
                                               ("AMD64", "amd64"), ("arm64", "arm64")])
def test_machine_names_map_to_kubernetes_arch(machine: str, arch: str) -> None:
    assert kube_arch(machine) == arch


def test_a_pools_arch_is_its_nodes_arch_label() -> None:
    by_name = {p.name: p for p in DEFAULT_POOLS}
    assert (node_arch(by_name["edge-arm64"]), node_arch(by_name["cpu-amd64"])) == (
        "arm64", "amd64")
    relabelled = Pool(name="odd", labels={"kubernetes.io/arch": "arm64"})
    assert node_arch(relabelled) == "arm64"
    assert node_manifest(relabelled, "odd-0")["metadata"]["labels"]["kubernetes.io/arch"] \
        == "arm64"


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


class _RecordingCore:
    """Stands in for CoreV1Api: records the agent's writes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args))


class _NoRunner:
    """Stands in for PodRunner: keeps the plan, starts nothing."""

    plans: list[Any] = []

    def __init__(self, plan: Any, images: Any, report: Any) -> None:
        _NoRunner.plans.append(plan)

    def start(self) -> None:
        pass


def agent_for_test(tmp_path: Path, guest: Callable[[str], Guest],
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _RecordingCore]:
    from kubernetes import client

    from neofleet.sandbox.agent import agent as agent_module

    monkeypatch.setattr(agent_module, "PodRunner", _NoRunner)
    monkeypatch.setattr(agent_module, "HOST_ARCH", "amd64")
    agent = agent_module.NodeAgent(client.ApiClient(), DEFAULT_POOLS, tmp_path, HOST_ENV,
                                   guest=guest)
    core = _RecordingCore()
    agent.core = core
    return agent, core


def test_the_agent_plans_an_arm64_nodes_pod_on_the_guest_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, core = agent_for_test(tmp_path, qemu_stand_in, monkeypatch)
    _NoRunner.plans.clear()
    agent.handle(pod(SERVE, volumes=SERVE_VOLUMES, nodeName="edge-arm64-1"))
    agent.handle({**pod(SERVE, volumes=SERVE_VOLUMES, nodeName="cpu-amd64-0"),
                  "metadata": {"name": "q", "namespace": "ns", "uid": "u-2"}})
    arm, amd = _NoRunner.plans
    assert arm.containers[0].argv[:4] == QEMU_GUEST.python
    assert amd.containers[0].argv[0] == sys.executable
    events = [args[1] for name, args in core.calls if name == "create_namespaced_event"]
    assert "(the runtime under qemu-aarch64-static)" in events[0]["message"]
    assert "simulates pool edge-arm64 (arm64)" in events[0]["message"]
    assert "under" not in events[1]["message"]


def test_the_agent_refuses_an_arm64_neofleet_pod_without_the_emulator(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(arch: str) -> Guest:
        raise PodSpecError("CreateContainerConfigError", "no emulator: run "
                           "scripts/setup-aarch64-python.sh")

    agent, core = agent_for_test(tmp_path, missing, monkeypatch)
    _NoRunner.plans.clear()
    agent.handle(pod(SERVE, volumes=SERVE_VOLUMES, nodeName="edge-arm64-0"))
    assert _NoRunner.plans == []
    status = next(args[2]["status"] for name, args in core.calls
                  if name == "patch_namespaced_pod_status")
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError",
                       "message": "no emulator: run scripts/setup-aarch64-python.sh"}
    event = next(args[1] for name, args in core.calls if name == "create_namespaced_event")
    assert (event["type"], event["reason"]) == ("Warning", "CreateContainerConfigError")
