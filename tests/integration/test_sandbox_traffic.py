"""Traffic and scraping on the sandbox fleet, through the test stand-ins for kube-proxy
(``TrafficDriver``) and Prometheus' kubernetes_sd (``PodTargets`` + file_sd): a
Deployment and an edge DaemonSet of OIP v2 stand-in servers labelled like the operator's
runtime pods answer every request while the Deployment scales 2 -> 3 -> 1, and a real
Prometheus scrapes each pod with its pool and revision.

The pods run a tiny OIP v2 server on the host image (``STANDIN_SERVER``), not
``neofleet serve``: it starts in a fraction of a second and, like a pod with a preStop
sleep, keeps serving ``TERM_DELAY_S`` seconds after SIGTERM (the node agent does not run
preStop hooks).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.pod_discovery import PodTargets
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.sandbox import pod_folder, wait_until
from tests.support.traffic import TrafficDriver

pytestmark = pytest.mark.integration

HOST_IMAGE = "sandbox.neofleet.io/host"
MODEL, DEPLOYMENT = "demo", "demo"
SELECTOR = f"neofleet.io/edgemodeldeployment={DEPLOYMENT}"
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
TERM_DELAY_S = 3
FAIL_SWITCH = "fail-infer"

# An OIP v2 stand-in: ready, infer (answers model_version = $REVISION), metrics; after
# SIGTERM it reports not-ready but serves TERM_DELAY_S more seconds, then exits 0. While a
# file named FAIL_SWITCH exists in its work folder, infer answers 500 (readiness stays 200).
STANDIN_SERVER = textwrap.dedent("""\
    import json, os, signal, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    MODEL, REVISION = os.environ["MODEL"], os.environ["REVISION"]
    state = {"terminating": False, "answered": 0}

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body, kind="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.reply(503 if state["terminating"] else 200, "{}")
            elif self.path == "/metrics":
                self.reply(200, "# TYPE standin_answered_total counter\\n"
                           f"standin_answered_total {state['answered']}\\n", "text/plain")
            else:
                self.reply(404, '{"error": "not found"}')

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != f"/v2/models/{MODEL}/infer":
                return self.reply(404, '{"error": "unknown model"}')
            if os.path.exists(os.environ["FAIL_SWITCH"]):
                return self.reply(500, '{"error": "failing on purpose"}')
            total = sum(sum(i["data"]) for i in request["inputs"])
            state["answered"] += 1
            self.reply(200, json.dumps({"model_name": MODEL, "model_version": REVISION,
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1],
                             "data": [total]}]}))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)

    def later_shutdown():
        time.sleep(float(os.environ["TERM_DELAY_S"]))
        server.shutdown()

    def on_term(signum, frame):
        state["terminating"] = True
        threading.Thread(target=later_shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
""")


def pod_template(pool: str, revision: str) -> dict[str, Any]:
    """Labelled like the operator's runtime pods; the container is the stand-in server."""
    labels = {"app.kubernetes.io/name": "neofleet-runtime",
              "neofleet.io/edgemodeldeployment": DEPLOYMENT, "neofleet.io/pool": pool,
              "neofleet.io/revision": revision}
    revision_ref = {"fieldRef": {"fieldPath": "metadata.labels['neofleet.io/revision']"}}
    container = {"name": "runtime", "image": HOST_IMAGE,
                 "command": ["python3", "-c", STANDIN_SERVER],
                 "env": [{"name": "MODEL", "value": MODEL},
                         {"name": "TERM_DELAY_S", "value": str(TERM_DELAY_S)},
                         {"name": "FAIL_SWITCH", "value": FAIL_SWITCH},
                         {"name": "REVISION", "valueFrom": revision_ref}],
                 "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                                    "periodSeconds": 1}}
    return {"metadata": {"labels": labels},
            "spec": {"nodeSelector": {"neofleet.io/pool": pool},
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": TERM_DELAY_S + 10,
                     "containers": [container]}}


def workload(kind: str, name: str, pool: str, revision: str, **spec: Any) -> dict[str, Any]:
    selector = {"neofleet.io/edgemodeldeployment": DEPLOYMENT, "neofleet.io/pool": pool}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": selector},
                     "template": pod_template(pool, revision), **spec}}


class Fleet:
    """The test's workloads: Deployment ``central`` (cpu-amd64) and DaemonSet ``edge``."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.namespace = namespace

    def create_central(self, replicas: int) -> None:
        self.apps.create_namespaced_deployment(self.namespace, workload(
            "Deployment", "central", "cpu-amd64", "rev-a", replicas=replicas))

    def create_edge(self) -> None:
        self.apps.create_namespaced_daemon_set(self.namespace, workload(
            "DaemonSet", "edge", "edge-arm64", "rev-b"))

    def pods(self, pool: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{SELECTOR},neofleet.io/pool={pool}").items)

    def ready(self, pool: str) -> list[Any]:
        return [p for p in self.pods(pool) if not p.metadata.deletion_timestamp
                and any(c.type == "Ready" and c.status == "True"
                        for c in p.status.conditions or [])]

    def scale(self, replicas: int) -> list[Any]:
        """Scale ``central``; wait until exactly ``replicas`` pods exist, all ready."""
        self.apps.patch_namespaced_deployment_scale(
            "central", self.namespace, {"spec": {"replicas": replicas}})
        return self.wait_central(replicas)

    def wait_central(self, replicas: int) -> list[Any]:
        def settled() -> list[Any] | None:
            ready = self.ready("cpu-amd64")
            return ready if len(ready) == len(self.pods("cpu-amd64")) == replicas else None

        found: list[Any] = wait_until(settled, f"{replicas} central pods, all ready", 60)
        return found

    def wait_edge(self) -> list[Any]:
        def ready() -> list[Any] | None:
            status = self.apps.read_namespaced_daemon_set_status("edge", self.namespace).status
            done = status.desired_number_scheduled and (
                status.number_ready == status.desired_number_scheduled)
            return self.ready("edge-arm64") if done else None

        found: list[Any] = wait_until(ready, "the edge DaemonSet ready", 60)
        return found


def wait_reached(traffic: TrafficDriver, pods: list[Any], answers: int = 20) -> None:
    """Until each of ``pods`` has answered at least ``answers`` more requests."""
    before = traffic.by_pod()
    names = [p.metadata.name for p in pods]

    def reached() -> bool:
        now = traffic.by_pod()
        return all(now.get(n, 0) >= before.get(n, 0) + answers for n in names)

    wait_until(reached, f"traffic to reach {names}", 30)


def scraped_up(prom: PrometheusServer, namespace: str,
               expected: set[tuple[str, str, str]]) -> set[tuple[str, str, str]] | None:
    """(pod, pool, revision) with ``up == 1``, once every expected one is there."""
    result = prom.query(f'up{{namespace="{namespace}"}} == 1')
    up = {(r["metric"]["pod"], r["metric"]["pool"], r["metric"]["revision"]) for r in result}
    return up if expected <= up else None


def identities(pods: list[Any]) -> set[tuple[str, str, str]]:
    return {(p.metadata.name, p.metadata.labels["neofleet.io/pool"],
             p.metadata.labels["neofleet.io/revision"]) for p in pods}


def test_traffic_and_scrapes_reach_every_ready_pod_while_a_deployment_scales(
        kube_api: Any, namespace: str, tmp_path: Path) -> None:
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    fleet = Fleet(kube_api, namespace)
    fleet.create_central(replicas=2)
    fleet.create_edge()
    targets = tmp_path / "sd" / "pods.json"
    with PodTargets(kube_api, namespace, SELECTOR, targets), \
            PrometheusServer([], file_sd=[targets]) as prom:
        edge = fleet.wait_edge()
        central = fleet.wait_central(2)
        with TrafficDriver(kube_api, namespace, SELECTOR, MODEL, BODY) as traffic:
            wait_reached(traffic, edge + central)
            grown = fleet.scale(3)
            wait_reached(traffic, grown)
            expected = identities(edge + grown)
            up = prom.wait_for(lambda: scraped_up(prom, namespace, expected), timeout=60)
            shrunk = fleet.scale(1)
            wait_reached(traffic, edge + shrunk)
    assert sorted(p.spec.node_name for p in edge) == ["edge-arm64-0", "edge-arm64-1"]
    assert not traffic.failures(), traffic.summary()
    served = identities(edge + central + grown)
    assert set(traffic.by_pod()) == {pod for pod, _, _ in served}, traffic.summary()
    assert all(r.model_version == r.revision for r in traffic.results), traffic.summary()
    assert set(traffic.by_revision()) == {"rev-a", "rev-b"}
    assert up == expected


def test_the_traffic_driver_records_failures_instead_of_hiding_them(
        kube_api: Any, namespace: str) -> None:
    """The control for the test above: requests with no endpoint and 500s are recorded."""
    fleet = Fleet(kube_api, namespace)
    with TrafficDriver(kube_api, namespace, SELECTOR, MODEL, BODY) as traffic:
        wait_until(traffic.failures, "a request with no endpoint", 10)
        fleet.create_central(replicas=1)
        pod = fleet.wait_central(1)[0]
        wait_reached(traffic, [pod])
        switch = pod_folder(pod) / "containers" / "runtime" / "work" / FAIL_SWITCH
        switch.write_text("")
        wait_until(lambda: any(r.kind == "http-error" for r in traffic.results), "a 500", 30)
        switch.unlink()
        wait_reached(traffic, [pod])
    failures = traffic.failures()
    assert {r.kind for r in failures} == {"no-endpoints", "http-error"}, traffic.summary()
    assert {(r.pod, r.status) for r in failures if r.kind == "http-error"} == {
        (pod.metadata.name, 500)}
