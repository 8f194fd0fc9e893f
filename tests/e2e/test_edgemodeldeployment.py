"""EdgeModelDeployments on the real control plane: artifacts chosen per pool from node
labels, runtime pods (`neofleet serve`, run by the node agent) pulling their bundles by
digest from a real registry and serving, and rollouts."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.bundles import make_bundle, make_meta  # noqa: F401
from tests.support.sandbox import pod_folder, wait_until

pytestmark = pytest.mark.integration
GROUP, VERSION, PLURAL = "neofleet.io", "v1alpha1", "edgemodeldeployments"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                    "data": [0.5, -1.0, 2.0, 0.25]}]}


def linear_onnx(scale: float) -> bytes:
    """x[1,4] -> y[1,2]: one MatMul (a bundle's artifact for the onnxruntime backend)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array((np.arange(8, dtype=np.float32).reshape(4, 2) * scale), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def push(tmp: Path, registry: Any, name: str, artifact: bytes, arch: str = "x86_64") -> str:
    from neofleet.bundle.oci import push_bundle

    make_bundle(tmp / name, artifact_bytes=artifact, arch=arch)
    return push_bundle(tmp / name, f"oci://127.0.0.1:{registry.port}/models/{name}:v1").uri


def custom(api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api)


def emd(name: str, artifacts: list[dict[str, str]], pools: list[dict[str, Any]],
        rollout: dict[str, Any] | None = None, **runtime: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": {"artifacts": artifacts}, "pools": pools,
                     "runtime": {"image": "neofleet-runtime:e2e", "threads": 1,
                                 "shutdownDelaySeconds": 2, **runtime},
                     "rollout": rollout or {"strategy": "Rolling"}}}


def status_of(api: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj.get("status") or {})


def ready_pods(api: Any, namespace: str, selector: str) -> list[Any]:
    from kubernetes import client

    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def infer(pod: Any, model: str) -> dict[str, Any]:
    from neofleet.sandbox.agent.agent import PORTS_ANNOTATION

    ports = json.loads(pod.metadata.annotations[PORTS_ANNOTATION])
    port = next(iter(ports.values())) if isinstance(ports, dict) else ports[0]["hostPort"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=json.dumps(BODY).encode(),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


CPU = {"name": "cpu", "nodeSelector": {"neofleet.io/pool": "cpu-amd64"}, "replicas": 2}
GPU = {"name": "gpu", "nodeSelector": {"neofleet.io/pool": "gpu-t4"}, "replicas": 1,
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                        "effect": "NoSchedule"}]}
EDGE = {"name": "edge", "nodeSelector": {"neofleet.io/pool": "edge-arm64"},
        "mode": "DaemonSet"}


def test_three_pools_get_the_bundle_that_fits_and_serve_it(
        kube_api: Any, namespace: str, registry: Any, operator_process: Any,
        tmp_path: Path) -> None:
    model = linear_onnx(1.0)
    uris = {"x86_64-avx512": push(tmp_path, registry, "avx512", model),
            "x86_64": push(tmp_path, registry, "base", linear_onnx(1.0 + 1e-6)),
            "aarch64": push(tmp_path, registry, "arm", model, arch="aarch64")}
    artifacts = [{"target": t, "uri": u} for t, u in uris.items()]
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, emd("three", artifacts, [CPU, GPU, EDGE]))
    status = wait_until(lambda: (s := status_of(kube_api, namespace, "three")).get("pools")
                        and s, "pools in status", 60)
    chosen = {p["name"]: (p["target"], p["artifactDigest"]) for p in status["pools"]}
    assert chosen == {"cpu": ("x86_64-avx512", uris["x86_64-avx512"].rsplit("@", 1)[1]),
                      "gpu": ("x86_64", uris["x86_64"].rsplit("@", 1)[1]),
                      "edge": ("aarch64", uris["aarch64"].rsplit("@", 1)[1])}
    # every pool serves: cpu and gpu natively, edge (a DaemonSet, one pod per arm64 node)
    # runs the aarch64 bundle under qemu-aarch64 with the emulated CPython
    nodes = {"cpu": "cpu-amd64", "gpu": "gpu-t4", "edge": "edge-arm64"}
    expected = np.array(BODY["inputs"][0]["data"], np.float32) @ \
        np.arange(8, dtype=np.float32).reshape(4, 2)
    for pool, count in (("cpu", 2), ("gpu", 1), ("edge", 2)):
        selector = f"neofleet.io/edgemodeldeployment=three,neofleet.io/pool={pool}"
        pods = wait_until(lambda s=selector, c=count: len(ready_pods(kube_api, namespace, s))
                          >= c and ready_pods(kube_api, namespace, s),
                          f"{count} ready runtime pods in pool {pool}", 240)
        assert sorted(p.spec.node_name.rsplit("-", 1)[0] for p in pods) == [nodes[pool]] * count
        for pod in pods:
            answer = infer(pod, "three")
            assert answer["outputs"][0]["data"] == pytest.approx(expected.tolist(), rel=1e-4)
            assert pod.spec.security_context.run_as_non_root
            assert pod.spec.automount_service_account_token is False
    wait_until(lambda: status_of(kube_api, namespace, "three").get("phase") == "Healthy",
               "the deployment to be Healthy", 120)
    monitor = custom(kube_api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "podmonitors", "three")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "neofleet.io/edgemodeldeployment": "three"}


def test_a_daemonset_pool_rolls_to_a_new_revision_and_the_old_one_goes(
        kube_api: Any, namespace: str, registry: Any, operator_process: Any,
        tmp_path: Path) -> None:
    """A Rolling update, pool after pool, of a DaemonSet pool and then a Deployment pool: the
    new revision's DaemonSet runs beside the stable one on every node, the stable one is
    parked while the next pool rolls, and both old workloads are deleted at the end."""
    from kubernetes import client

    pools = [{"name": "cpu", "nodeSelector": {"neofleet.io/pool": "cpu-amd64"},
              "mode": "DaemonSet"},
             {"name": "more", "nodeSelector": {"neofleet.io/pool": "cpu-amd64"},
              "replicas": 1}]
    first = push(tmp_path, registry, "ds-v1", linear_onnx(1.0))
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL,
        emd("ds", [{"target": "x86_64-avx512", "uri": first}], pools))
    wait_until(lambda: status_of(kube_api, namespace, "ds").get("phase") == "Healthy",
               "the first revision to be Healthy", 240)
    stable = status_of(kube_api, namespace, "ds")["stableRevision"]
    second = push(tmp_path, registry, "ds-v2", linear_onnx(2.0))
    _patch_artifact(kube_api, namespace, "ds", second,
                    {"strategy": "Rolling", "poolOrder": "Sequential"})
    wait_until(lambda: (s := status_of(kube_api, namespace, "ds")).get("stableRevision")
               not in (None, stable) and s.get("phase") == "Healthy",
               "the new revision to be Healthy", 240)
    revision = status_of(kube_api, namespace, "ds")["stableRevision"]
    apps = client.AppsV1Api(kube_api)
    left = wait_until(lambda: [d.metadata.name for d in apps.list_namespaced_daemon_set(
        namespace, label_selector="neofleet.io/edgemodeldeployment=ds").items] == [
        f"ds-cpu-{revision}"] or None, "only the new revision's DaemonSet", 60)
    assert left and [d.metadata.name for d in apps.list_namespaced_deployment(
        namespace, label_selector="neofleet.io/edgemodeldeployment=ds").items] == [
        f"ds-more-{revision}"]
    pods = wait_until(lambda: len(p := ready_pods(
        kube_api, namespace, f"neofleet.io/edgemodeldeployment=ds,neofleet.io/revision="
        f"{revision}")) == 3 and p, "a new pod on each node, and the Deployment's", 120)
    expected = np.array(BODY["inputs"][0]["data"], np.float32) @ \
        (np.arange(8, dtype=np.float32).reshape(4, 2) * 2.0)
    for pod in pods:
        assert infer(pod, "ds")["outputs"][0]["data"] == pytest.approx(expected.tolist(),
                                                                       rel=1e-4)


def test_a_pool_without_a_fitting_bundle_says_which_targets_would_fit(
        kube_api: Any, namespace: str, registry: Any, operator_process: Any,
        tmp_path: Path) -> None:
    uri = push(tmp_path, registry, "only-avx", linear_onnx(1.0))
    custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL,
        emd("partial", [{"target": "x86_64-avx512", "uri": uri}], [CPU, EDGE]))
    cond = wait_until(lambda: next((c for c in status_of(kube_api, namespace, "partial")
                                    .get("conditions", [])
                                    if c["type"] == "ArtifactsResolved"), None),
                      "the ArtifactsResolved condition", 60)
    assert cond["status"] == "False" and cond["reason"] == "NoArtifactForPool"
    assert "edge" in cond["message"] and "aarch64" in cond["message"]
    wait_until(lambda: ready_pods(kube_api, namespace, "neofleet.io/pool=cpu"),
               "the cpu pool to serve anyway", 180)


def slow_onnx(layers: int = 8, rows: int = 2048, width: int = 1024) -> bytes:
    """The same signature as ``linear_onnx`` but ~17 GMAC per request (~0.15 s on one
    core here): a real bundle whose serving latency breaches a canary threshold (no
    sleep, no fault injection)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, width)).astype(np.float32), "w0"),
             numpy_helper.from_array(np.array([rows, width], np.int64), "spread"),
             numpy_helper.from_array(rng.standard_normal((width, 2)).astype(np.float32)
                                     / width, "wout")]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]),
             helper.make_node("Expand", ["h0", "spread"], ["a0"])]
    for i in range(layers):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
            f"w{i + 1}"))
        nodes.append(helper.make_node("MatMul", [f"a{i}", f"w{i + 1}"], [f"a{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"a{layers}"], ["m"], axes=[0], keepdims=1),
              helper.make_node("MatMul", ["m", "wout"], ["y"])]
    graph = helper.make_graph(
        nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _canary_rollout(prometheus: str, p99_limit_s: float) -> dict[str, Any]:
    analysis = {"prometheus": prometheus, "interval": "3s", "count": 2, "failureLimit": 0,
                "window": "15s",
                "metrics": [{"name": "p99-latency", "threshold": p99_limit_s},
                            {"name": "error-ratio", "threshold": 0.01}]}
    return {"strategy": "Canary", "autoRollback": True,
            "steps": [{"setWeight": 50}, {"analysis": analysis}, {"setWeight": 100}]}


def _patch_artifact(api: Any, namespace: str, name: str, uri: str,
                    rollout: dict[str, Any]) -> None:
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name,
        {"spec": {"model": {"artifacts": [{"target": "x86_64-avx512", "uri": uri}]},
                  "rollout": rollout}})


@pytest.fixture
def observed(kube_api: Any, namespace: str, tmp_path: Path) -> Any:
    """Prometheus scraping the namespace's runtime pods (file_sd kept by PodTargets)."""
    from tests.support.pod_discovery import PodTargets
    from tests.support.prometheus import PrometheusServer, prometheus_binary

    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed")
    targets = tmp_path / "sd" / "runtime.json"
    with PodTargets(kube_api, namespace, "app.kubernetes.io/name=neofleet-runtime",
                    targets) as _, PrometheusServer([], file_sd=[targets]) as prom:
        yield prom


def _deploy_stable(api: Any, namespace: str, registry: Any, tmp_path: Path,
                   name: str, **runtime: Any) -> str:
    uri = push(tmp_path, registry, f"{name}-v1", linear_onnx(1.0))
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL,
        emd(name, [{"target": "x86_64-avx512", "uri": uri}], [CPU], **runtime))
    wait_until(lambda: status_of(api, namespace, name).get("phase") == "Healthy",
               "the first revision to be Healthy", 240)
    return str(status_of(api, namespace, name)["stableRevision"])


def test_a_good_canary_completes_with_zero_failed_requests(
        kube_api: Any, namespace: str, registry: Any, operator_process: Any,
        observed: Any, tmp_path: Path) -> None:
    from tests.support.traffic import TrafficDriver

    stable = _deploy_stable(kube_api, namespace, registry, tmp_path, "good")
    new = push(tmp_path, registry, "good-v2", linear_onnx(1.0 + 1e-6))
    with TrafficDriver(kube_api, namespace, "neofleet.io/edgemodeldeployment=good", "good",
                       BODY) as traffic:
        wait_until(lambda: traffic.results, "traffic to flow", 30)
        _patch_artifact(kube_api, namespace, "good", new, _canary_rollout(observed.url, 1.0))
        done = wait_until(lambda: (s := status_of(kube_api, namespace, "good")).get(
            "stableRevision") not in (None, stable) or s.get("phase") == "RolledBack",
            "the canary to finish", 420)
        assert done
        status = status_of(kube_api, namespace, "good")
        wait_until(lambda: {e.revision for e in traffic.endpoints()} ==
                   {status["stableRevision"]}, "only the new revision to serve", 60)
    assert status["phase"] == "Healthy", status
    assert not traffic.failures(), traffic.summary()
    counts = traffic.by_revision()
    assert counts.get(stable, 0) > 0 and counts.get(status["stableRevision"], 0) > 0, counts
    # a round before Prometheus scraped the canary is inconclusive (tolerated, by design);
    # every round that had data passed, and the analysis's count of them did
    measured = [m for m in status["rollout"]["measurements"] if not m.get("inconclusive")]
    assert measured and all(m["ok"] for m in measured), status["rollout"]["measurements"]
    print(f"\ngood canary: {len(traffic.results)} requests, 0 failed, by revision {counts}")


def _shared_claim(api: Any, namespace: str, name: str) -> None:
    """A ReadWriteMany claim bound to a volume made for it (the sandbox has no provisioner;
    its agent gives every pod of the namespace that mounts the claim the same folder)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    volume = f"{namespace}-{name}"
    core.create_persistent_volume({
        "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "storageClassName": "", "persistentVolumeReclaimPolicy": "Delete",
                 "hostPath": {"path": f"/var/lib/neofleet-e2e/{volume}"},
                 "claimRef": {"namespace": namespace, "name": name}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}})
    wait_until(lambda: core.read_namespaced_persistent_volume_claim(name, namespace)
               .status.phase == "Bound", f"claim {name} to be bound", 60)


def test_a_slow_canary_is_rolled_back_by_the_analysis(
        kube_api: Any, namespace: str, registry: Any, operator_process: Any,
        observed: Any, tmp_path: Path) -> None:
    import time
    from datetime import UTC, datetime

    from kubernetes import client

    from tests.support.traffic import TrafficDriver

    _shared_claim(kube_api, namespace, "bundles")
    stable = _deploy_stable(kube_api, namespace, registry, tmp_path, "bad",
                            bundleCacheClaim="bundles")
    slow = push(tmp_path, registry, "bad-v2", slow_onnx())
    with TrafficDriver(kube_api, namespace, "neofleet.io/edgemodeldeployment=bad", "bad",
                       BODY, timeout_s=30) as traffic:
        wait_until(lambda: traffic.results, "traffic to flow", 30)
        started, started_at = time.monotonic(), datetime.now(UTC)
        _patch_artifact(kube_api, namespace, "bad", slow, _canary_rollout(observed.url, 0.05))
        wait_until(lambda: status_of(kube_api, namespace, "bad").get("phase") == "RolledBack",
                   "the analysis to roll the canary back", 420)
        wait_until(lambda: traffic.endpoints() and {e.revision for e in traffic.endpoints()}
                   == {stable} and len(traffic.endpoints()) == 2,
                   "traffic to be fully stable again", 120)
        stable_again_s = time.monotonic() - started
    status = status_of(kube_api, namespace, "bad")
    assert status["stableRevision"] == stable and status.get("canaryRevision") is None
    assert "p99-latency" in status["message"], status["message"]
    failed_stable = [a for a in traffic.failures() if a.revision == stable]
    assert not failed_stable, traffic.summary()
    restored = [p for p in ready_pods(kube_api, namespace,
                                      f"neofleet.io/edgemodeldeployment=bad,"
                                      f"neofleet.io/revision={stable}")
                if p.metadata.creation_timestamp >= started_at.replace(microsecond=0)]
    logs = [(pod_folder(p) / "containers" / "runtime" / "stderr.log").read_text()
            for p in restored]
    assert restored and all("from the cache)" in log for log in logs), logs   # no download
    events = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=bad").items
    assert any(e.reason == "RolledBack" for e in events)
    print(f"\nbad canary: stable again after {stable_again_s:.1f} s ({len(restored)} stable "
          "pod(s) re-created from the shared bundle cache); failed requests: "
          f"{len(traffic.failures())} ({len(failed_stable)} on the stable side); "
          f"{status['message']}")
