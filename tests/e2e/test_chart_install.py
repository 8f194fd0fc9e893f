"""The chart's rendered manifests installed into the sandbox's control plane, and the whole
CompilationJob → EdgeModelDeployment flow run by the operator under exactly the chart's
RBAC. The operator runs as a process with the args of the chart's Deployment (the sandbox
does not give pods in-cluster API access: a test stand-in for the kubelet there), as the
chart's ServiceAccount."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from neofleet.sandbox import processes
from tests.e2e.test_edgemodeldeployment import ready_pods
from tests.support.sandbox import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "neofleet"
MODEL = ROOT / "examples" / "models" / "tiny_cnn.onnx"
GROUP, VERSION = "neofleet.io", "v1alpha1"


def rendered_chart(values: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(CRDs, the other manifests) of the chart installed as release neofleet."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="neofleet", namespace="neofleet-system",
                            is_install=True)
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    crds = [doc for c in chart.crds for doc in yaml.safe_load_all(c["data"]) if doc]
    return crds, docs


def operator_argv(deployment: dict[str, Any], metrics: int, liveness: int) -> list[str]:
    """The chart's container args, with the listening ports and host made test-local."""
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    for flag, value in (("--metrics-port", str(metrics)), ("--metrics-host", "127.0.0.1"),
                        ("--liveness", f"http://127.0.0.1:{liveness}/healthz")):
        args[args.index(flag) + 1] = value
    return [sys.executable, "-m", "neofleet.cli", *args]


def test_the_chart_installs_and_runs_compile_then_deploy_under_its_rbac(
        kube_api: Any, namespace: str, registry: Any, sandbox_cluster: Any,
        tmp_path: Path) -> None:
    from kubernetes import client

    from neofleet.operator.rbac import RULES
    from neofleet.sandbox.kube import apply_all, wait_established

    crds, docs = rendered_chart({"images": {"compiler": {"repository": "neofleet-compiler",
                                                         "tag": "chart"}}})
    apply_all(kube_api, crds)
    wait_established(kube_api, crds)
    by_kind = {d["kind"]: d for d in docs}
    apply_all(kube_api, [d for d in docs if d["kind"] != "Deployment"])
    role = client.RbacAuthorizationV1Api(kube_api).read_cluster_role("neofleet-operator")
    assert [r.to_dict()["verbs"] for r in role.rules] == [r["verbs"] for r in RULES]
    metrics, liveness = processes.free_ports(2)
    env = {**os.environ, "KUBECONFIG": str(sandbox_cluster.operator_kubeconfig),
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "operator.log"
    operator = processes.start(operator_argv(by_kind["Deployment"], metrics, liveness), log,
                               env)
    custom = client.CustomObjectsApi(kube_api)
    try:
        repo = f"oci://127.0.0.1:{registry.port}/models/chart"
        sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "compilationjobs", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
            "metadata": {"name": "cnn"},
            "spec": {"model": {"uri": f"file://{MODEL}", "framework": "onnx", "sha256": sha},
                     "targets": [{"name": "cpu", "device": "x86_64-avx512"},
                                 {"name": "edge", "device": "aarch64"}],
                     "output": {"repository": repo}, "verify": {"samples": 2}}})
        wait_until(lambda: custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "compilationjobs", "cnn").get("status", {}).get(
            "phase") == "Succeeded", "the CompilationJob", 900)
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "edgemodeldeployments", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModelDeployment",
                "metadata": {"name": "cnn"},
                "spec": {"model": {"compilationJobRef": {"name": "cnn"}},
                         "pools": [{"name": "cpu", "replicas": 1,
                                    "nodeSelector": {"neofleet.io/pool": "cpu-amd64"}},
                                   {"name": "edge", "mode": "DaemonSet",
                                    "nodeSelector": {"neofleet.io/pool": "edge-arm64"}}],
                         "runtime": {"image": "neofleet-runtime:chart", "threads": 1}}})
        wait_until(lambda: custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "edgemodeldeployments", "cnn").get(
            "status", {}).get("phase") == "Healthy", "the EdgeModelDeployment", 300)
        status = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "edgemodeldeployments", "cnn")["status"]
        assert {p["name"]: p["target"] for p in status["pools"]} == {"cpu": "cpu",
                                                                      "edge": "edge"}
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        answers = []
        for pod in ready_pods(kube_api, namespace, "neofleet.io/edgemodeldeployment=cnn"):
            answers.append(infer_tensor(pod, x))
        assert len(answers) == 3
        for answer in answers[1:]:
            np.testing.assert_allclose(answer, answers[0], rtol=1e-3, atol=1e-4)
        assert "Forbidden" not in log.read_text(), log.read_text()[-3000:]
    finally:
        processes.stop_child(operator)


def infer_tensor(pod: Any, x: np.ndarray) -> np.ndarray:
    import json
    import urllib.request

    from neofleet.sandbox.agent.agent import PORTS_ANNOTATION

    port = next(iter(json.loads(pod.metadata.annotations[PORTS_ANNOTATION]).values()))
    base = f"http://127.0.0.1:{port}/v2/models/cnn"
    with urllib.request.urlopen(base, timeout=30) as response:
        name = json.loads(response.read())["inputs"][0]["name"]
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    request = urllib.request.Request(base + "/infer", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        out = json.loads(response.read())["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])

