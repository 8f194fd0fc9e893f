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
from tests.support.sandbox import wait_until

pytestmark = pytest.mark.integration
GROUP, VERSION, PLURAL = "neofleet.io", "v1alpha1", "edgemodeldeployments"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                    "data": [0.5, -1.0, 2.0, 0.25]}]}


def linear_onnx(scale: float) -> bytes:
    """x[1,4] -> y[1,2]: one MatMul (a bundle's artifact for the onnxruntime backend)."""
    import onnx
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
        rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": {"artifacts": artifacts}, "pools": pools,
                     "runtime": {"image": "neofleet-runtime:e2e", "threads": 1,
                                 "shutdownDelaySeconds": 2},
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
    for pool, count in (("cpu", 2), ("gpu", 1)):
        selector = f"neofleet.io/edgemodeldeployment=three,neofleet.io/pool={pool}"
        pods = wait_until(lambda s=selector, c=count: len(ready_pods(kube_api, namespace, s))
                          >= c and ready_pods(kube_api, namespace, s),
                          f"{count} ready runtime pods in pool {pool}", 180)
        for pod in pods:
            answer = infer(pod, "three")
            expected = np.array(BODY["inputs"][0]["data"], np.float32) @ \
                np.arange(8, dtype=np.float32).reshape(4, 2)
            assert answer["outputs"][0]["data"] == pytest.approx(expected.tolist(), rel=1e-4)
            assert pod.spec.node_name.startswith({"cpu": "cpu-amd64", "gpu": "gpu-t4"}[pool])
            assert pod.spec.security_context.run_as_non_root
            assert pod.spec.automount_service_account_token is False
    # the DaemonSet puts one pod on each arm64 node (the x86 sandbox cannot run aarch64
    # code natively, so those pods are not expected to serve here)
    from kubernetes import client

    edge = wait_until(lambda: len(client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector="neofleet.io/pool=edge").items) == 2 and
        client.CoreV1Api(kube_api).list_namespaced_pod(
            namespace, label_selector="neofleet.io/pool=edge").items,
        "one edge pod per arm64 node", 60)
    assert sorted(p.spec.node_name for p in edge) == ["edge-arm64-0", "edge-arm64-1"]


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
