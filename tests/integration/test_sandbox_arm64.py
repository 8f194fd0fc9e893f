"""An arm64 node's runtime pod serves an aarch64 bundle with aarch64 code, under qemu.

No cluster: the pod is planned and run the way the sandbox's node agent does it
(``plan_pod`` for the node's architecture with ``qemu_guest``, then a ``PodRunner``), so
``neofleet serve oci://…@sha256:…`` runs on the emulated aarch64 CPython
(``qemu-aarch64-static -L <sysroot> <sysroot>/usr/bin/python3.11``), pulls the bundle from
a real registry, and answers over HTTP. Needs qemu-user-static, docker-registry and the
environment from scripts/setup-aarch64-python.sh (skipped without them).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neofleet.emulation import QEMU, SERVE_MODULES, EmulatorUnavailable, locate_emulator
from neofleet.sandbox.agent.guest import qemu_guest
from neofleet.sandbox.agent.podplan import HOST_ARCH, plan_pod
from neofleet.sandbox.agent.runner import PodRunner
from neofleet.sandbox.pools import DEFAULT_POOLS, node_arch
from neofleet.sandbox.processes import free_ports
from tests.integration.conftest import SERVER_W, matmul_model
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration

IMAGE = "localhost/neofleet-runtime:e2e"
PORT = 8080
READY_TIMEOUT_S = 300.0
X = [0.5, -1.0, 2.0, 0.25]


@pytest.fixture(scope="module", autouse=True)
def _emulator() -> None:
    if HOST_ARCH == "arm64":
        pytest.skip("this machine is arm64: nothing to emulate")
    try:
        locate_emulator(SERVE_MODULES)
    except EmulatorUnavailable as exc:
        pytest.skip(f"no aarch64 emulation for neofleet serve here: {exc}")


def runtime_pod(uri: str) -> dict[str, Any]:
    """What the operator renders for a pool's runtime (trimmed), bound to an arm64 node."""
    return {
        "metadata": {"name": "edge-runtime-0", "namespace": "ns", "uid": "arm64-pod"},
        "spec": {
            "nodeName": "edge-arm64-0", "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "runtime", "image": IMAGE,
                "args": ["serve", uri, "--host", "127.0.0.1", "--port", str(PORT),
                         "--name", "edge", "--pool", "edge-arm64", "--threads", "1",
                         "--cache-dir", "/var/cache/neofleet", "--drain-seconds", "2"],
                "ports": [{"name": "http", "containerPort": PORT}],
                "env": [{"name": "TMPDIR", "value": "/tmp"}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT},
                                   "periodSeconds": 1, "failureThreshold": 2},
                "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/neofleet"},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }


def no_objects(kind: str, namespace: str, name: str) -> None:
    return None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_arm64_nodes_runtime_pod_serves_an_aarch64_bundle_under_qemu(
        registry: Any, tmp_path: Path) -> None:
    from neofleet.bundle.oci import push_bundle

    make_bundle(tmp_path / "bundle", artifact_bytes=matmul_model(), arch="aarch64")
    uri = push_bundle(tmp_path / "bundle",
                      f"oci://127.0.0.1:{registry.port}/models/arm64-pod:v1").uri
    edge = next(pool for pool in DEFAULT_POOLS if pool.name == "edge-arm64")
    pod = runtime_pod(uri)
    plan = plan_pod(pod, tmp_path / "pods" / "arm64-pod", free_ports(1), no_objects,
                    os.environ, node_arch=node_arch(edge), host_arch=HOST_ARCH,
                    guest=qemu_guest)
    container = plan.containers[0]
    assert Path(container.argv[0]).name == QEMU and container.emulator == QEMU
    assert container.argv[4:7] == ("-m", "neofleet.cli", "serve")
    url = f"http://127.0.0.1:{plan.ports[PORT]}"
    folder = container.termination_path.parent
    reports: list[list[Any]] = []
    runner = PodRunner(plan, {"runtime": IMAGE}, reports.append)
    pid = 0
    started = time.monotonic()
    runner.start()
    try:
        while not _ready(url):
            state = runner.states[0]
            assert state.state != "terminated" and state.reason != "RunContainerError", (
                f"{state}\n{_logs(folder)}")
            assert time.monotonic() - started < READY_TIMEOUT_S, (
                f"not ready after {READY_TIMEOUT_S} s\n{_logs(folder)}")
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        pid = _pid(folder)
        # the process serving is qemu running aarch64 code, not this machine's python
        assert Path(os.readlink(f"/proc/{pid}/exe")).name == QEMU
        answer = _infer(url)
        expected = (np.array([X], np.float32) @ SERVER_W).ravel()
        assert answer["outputs"][0]["shape"] == [1, 2]
        np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-6)
        with urllib.request.urlopen(url + "/v2/models/edge", timeout=30) as response:
            assert json.loads(response.read())["platform"] == "neofleet_onnxruntime"
        deadline = time.monotonic() + 10
        while not runner.states[0].ready and time.monotonic() < deadline:
            time.sleep(0.1)   # the runner's own probe (period 1 s) sees it too
        assert runner.states[0].ready
        print(f"\nemulated neofleet serve (oci pull + load under {QEMU}) ready after "
              f"{ready_s:.2f} s")
        assert "bundle sha256:" in _logs(folder) and "for linux-aarch64" in _logs(folder)
    finally:
        runner.stop()   # SIGTERM to the container's process group, SIGKILL after the grace
        pid = pid or _pid(folder)
        if not runner.finished.wait(timeout=60) and pid:
            os.killpg(pid, signal.SIGKILL)   # not reaped yet, so still ours
    assert pid and not _alive(pid)


def _infer(url: str) -> dict[str, Any]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": X}]}).encode()
    request = urllib.request.Request(url + "/v2/models/edge/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def _pid(folder: Path) -> int:
    try:
        return int((folder / "pid").read_text())
    except (OSError, ValueError):
        return 0


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {name}\n" + (folder / name).read_text(errors="replace")[-4000:]
                     for name in ("stdout.log", "stderr.log") if (folder / name).exists())
