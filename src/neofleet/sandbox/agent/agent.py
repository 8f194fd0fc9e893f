"""The node agent's side of the Kubernetes API: nodes, leases, pods (the only module here
that talks to the API).

- registers one Node per pool member (labels, capacity, taints) and posts Ready;
- renews each node's Lease in ``kube-node-lease`` every 10 s and the Ready condition every
  40 s, so the node lifecycle controller keeps the nodes Ready;
- watches the pods bound to its nodes, starts a ``PodRunner`` for each, patches their
  status from the runner's reports, annotates the host ports and the log folder, and on
  deletion stops the processes (grace period, then SIGKILL) and removes the Pod;
- plans each pod for its node's architecture: ``neofleet-runtime`` containers on arm64
  nodes run on ``guest`` (default ``qemu_guest``: qemu-aarch64 with the emulated aarch64
  Python).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from neofleet.sandbox.agent.guest import qemu_guest
from neofleet.sandbox.agent.podplan import (
    HOST_ARCH,
    GuestLookup,
    PodPlan,
    decode_secret,
    encode_configmap,
    plan_pod,
)
from neofleet.sandbox.agent.runner import PodRunner, utc_now
from neofleet.sandbox.agent.status import ContainerState, pod_status
from neofleet.sandbox.errors import PodSpecError
from neofleet.sandbox.pools import (
    Pool,
    node_arch,
    node_manifest,
    node_names,
    ready_conditions,
)
from neofleet.sandbox.processes import free_ports

LOG = logging.getLogger("neofleet.sandbox.agent")
PORTS_ANNOTATION = "sandbox.neofleet.io/ports"
FOLDER_ANNOTATION = "sandbox.neofleet.io/folder"
LEASE_PERIOD_S, STATUS_PERIOD_S = 10.0, 40.0
TERMINAL = ("Succeeded", "Failed")


class NodeAgent:
    """Simulate the nodes of ``pools``; pods' folders live under ``folder/pods``."""

    def __init__(self, api: client.ApiClient, pools: tuple[Pool, ...], folder: Path,
                 host_env: Mapping[str, str], guest: GuestLookup = qemu_guest) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.pools = {name: pool for pool in pools for name in node_names(pool)}
        self.folder = folder
        self.host_env = dict(host_env)
        self.guest = guest
        self.runners: dict[str, PodRunner | None] = {}   # None: refused, nothing runs
        self.deleting: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ nodes and leases
    def register_nodes(self) -> None:
        for name, pool in self.pools.items():
            manifest = node_manifest(pool, name)
            try:
                self.core.create_node(manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(name, {"metadata": manifest["metadata"],
                                            "spec": manifest["spec"]})
            status = {**manifest["status"], "conditions": ready_conditions(utc_now())}
            self.core.patch_node_status(name, {"status": status})
        self.renew_leases()

    def renew_leases(self) -> None:
        now = _micro_now()
        for name in self.pools:
            body = {"metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                             "renewTime": now}}
            try:
                self.coordination.patch_namespaced_lease(name, "kube-node-lease", body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.coordination.create_namespaced_lease("kube-node-lease", body)

    def post_ready(self) -> None:
        conditions = ready_conditions(utc_now())
        for name in self.pools:
            self.core.patch_node_status(name, {"status": {"conditions": conditions}})

    def heartbeat_forever(self) -> None:
        ticks = 0
        while not self.stopping.wait(LEASE_PERIOD_S):
            try:
                self.renew_leases()
                ticks += 1
                if ticks * LEASE_PERIOD_S >= STATUS_PERIOD_S:
                    ticks = 0
                    self.post_ready()
            except (ApiException, OSError) as exc:   # the apiserver may be going away
                LOG.warning("heartbeat failed: %s", exc)

    # ------------------------------------------------------------------------- pods
    def watch_pods_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces()
                for pod in listing.items:
                    self.handle(self._as_dict(pod))
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing.metadata.resource_version, timeout_seconds=60)
                for event in stream:
                    if self.stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(self._as_dict(event["object"]))
                    elif event["type"] == "DELETED":
                        self.forget(self._as_dict(event["object"]))
            except (ApiException, OSError, ValueError) as exc:
                if not self.stopping.is_set():
                    LOG.warning("pod watch restarted: %s", exc)
                    self.stopping.wait(1.0)

    def handle(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") not in self.pools:
            return
        uid = meta["uid"]
        with self.lock:
            if meta.get("deletionTimestamp"):
                if uid not in self.deleting:
                    self.deleting.add(uid)
                    threading.Thread(target=self._delete, args=(pod,), daemon=True).start()
                return
            if uid in self.runners or pod.get("status", {}).get("phase") in TERMINAL:
                return
            self.runners[uid] = self._start(pod)

    def forget(self, pod: dict[str, Any]) -> None:
        with self.lock:
            runner = self.runners.pop(pod["metadata"]["uid"], None)
        if runner is not None:
            runner.stop()

    def _start(self, pod: dict[str, Any]) -> PodRunner | None:
        meta = pod["metadata"]
        folder = self.folder / "pods" / meta["uid"]
        declared = sum(len(c.get("ports", [])) for c in pod["spec"]["containers"])
        images = {c["name"]: c.get("image", "") for c in pod["spec"]["containers"]}
        pool = self.pools[pod["spec"]["nodeName"]]
        try:
            plan = plan_pod(pod, folder, free_ports(declared), self._lookup, self.host_env,
                            node_arch=node_arch(pool), host_arch=HOST_ARCH, guest=self.guest)
        except PodSpecError as exc:
            LOG.warning("pod %s/%s: %s", meta["namespace"], meta["name"], exc)
            self._report_refusal(pod, images, exc)
            self._event(pod, "Warning", exc.reason, str(exc))
            return None
        self._annotate(plan)
        runner = PodRunner(plan, images, lambda states: self._report(pod, states))
        runner.start()
        emulators = sorted({c.emulator for c in plan.containers if c.emulator})
        emulated = f" (the runtime under {', '.join(emulators)})" if emulators else ""
        gpu = ", GPU" if "nvidia.com/gpu" in pool.capacity else ""
        self._event(pod, "Normal", "Started",
                    f"started as local processes on this machine{emulated}; node "
                    f"{pod['spec']['nodeName']} simulates pool {pool.name} "
                    f"({node_arch(pool)}{gpu}); logs in {plan.folder / 'containers'}")
        return runner

    def _event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta, now = pod["metadata"], utc_now()
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "neofleet-sandbox-agent",
                           "host": pod["spec"].get("nodeName", "")}}
        self._quietly(self.core.create_namespaced_event, meta["namespace"], body)

    def _annotate(self, plan: PodPlan) -> None:
        ports = {str(c): h for c, h in plan.ports.items()}
        body = {"metadata": {"annotations": {PORTS_ANNOTATION: json.dumps(ports),
                                             FOLDER_ANNOTATION: str(plan.folder)}}}
        self._quietly(self.core.patch_namespaced_pod, plan.name, plan.namespace, body)

    def _report(self, pod: dict[str, Any], states: list[ContainerState]) -> None:
        meta = pod["metadata"]
        status = pod_status(states, pod["spec"].get("restartPolicy", "Always"),
                            pod.setdefault("_started", utc_now()), utc_now(),
                            pod.get("status"))
        pod["status"] = status
        self._quietly(self.core.patch_namespaced_pod_status, meta["name"], meta["namespace"],
                      {"status": status})

    def _report_refusal(self, pod: dict[str, Any], images: dict[str, str],
                        error: PodSpecError) -> None:
        states = [ContainerState(name=name, image=image, reason=error.reason,
                                 message=str(error)) for name, image in images.items()]
        self._report(pod, states)

    def _delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self.lock:
            runner = self.runners.pop(meta["uid"], None)
        if runner is not None:
            runner.stop()
            runner.finished.wait()
        body = client.V1DeleteOptions(grace_period_seconds=0,
                                      preconditions=client.V1Preconditions(uid=meta["uid"]))
        self._quietly(self.core.delete_namespaced_pod, meta["name"], meta["namespace"],
                      body=body)
        shutil.rmtree(self.folder / "pods" / meta["uid"], ignore_errors=True)
        with self.lock:
            self.deleting.discard(meta["uid"])

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            if kind == "secret":
                return decode_secret(self.core.read_namespaced_secret(name, namespace).data)
            found = self.core.read_namespaced_config_map(name, namespace)
            return encode_configmap(found.data, found.binary_data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _as_dict(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        result: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return result

    def _quietly(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """Pod writes that may race a deletion (404/409) are not errors."""
        try:
            call(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in (404, 409):
                LOG.warning("%s failed: %s", getattr(call, "__name__", call), exc.reason)

    def stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            runners = list(self.runners.values())
            self.runners.clear()
        for runner in runners:
            if runner is not None:
                runner.stop()
        for runner in runners:
            if runner is not None:
                runner.finished.wait(timeout=35)




def _micro_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
