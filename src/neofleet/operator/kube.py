"""The operator's only module that talks to the Kubernetes API (official client, sync).

Reads CompilationJobs, their Jobs and pods (turned into ``ObservedJob``), creates Jobs
("already exists" means adopt), deletes Jobs; reads EdgeModelDeployments, Nodes and the
runtime Deployments/DaemonSets (``ObservedWorkload``), creates, resizes and deletes them
and their Services; patches status, posts Events; reads and writes the leader Lease.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from neofleet.api import GROUP, VERSION
from neofleet.operator.leader import LeaderElectionError, LeaseRecord
from neofleet.operator.planning.compilation import ObservedJob
from neofleet.operator.planning.rollout import ObservedWorkload
from neofleet.operator.render.job import CJ_LABEL, HASH_LABEL, TARGET_LABEL
from neofleet.operator.render.runtime import EMD_LABEL, PARKED_LABEL, POOL_LABEL, REVISION_LABEL

PLURAL = "compilationjobs"
EMD_PLURAL = "edgemodeldeployments"
SPEC_HASH = "neofleet.io/spec-hash"
MERGE_PATCH = "application/merge-patch+json"


def namespace_terminating(exc: BaseException) -> bool:
    """A write refused because the namespace is being deleted (nothing left to do)."""
    return (isinstance(exc, ApiException) and exc.status == 403
            and "NamespaceTerminating" in str(exc.body))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    def get_compilation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_custom(namespace, PLURAL, name)

    def get_edge_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_custom(namespace, EMD_PLURAL, name)

    def _get_custom(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name)
            return found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_compilation_jobs(self, namespaces: list[str]) -> list[tuple[str, str]]:
        """(namespace, name) of every CompilationJob watched."""
        return [(i["metadata"]["namespace"], i["metadata"]["name"])
                for i in self._list_custom(namespaces, PLURAL)]

    def list_edge_deployments(self, namespaces: list[str]) -> list[dict[str, Any]]:
        return self._list_custom(namespaces, EMD_PLURAL)

    def _list_custom(self, namespaces: list[str], plural: str) -> list[dict[str, Any]]:
        if not namespaces:
            found: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
                GROUP, VERSION, plural)["items"]
            return found
        return [item for ns in namespaces for item in
                self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]]

    def node_labels(self) -> dict[str, dict[str, str]]:
        """Every node's labels, by node name."""
        return {n.metadata.name: dict(n.metadata.labels or {})
                for n in self.core.list_node().items}

    def observed_workloads(self, namespace: str, emd: str) -> list[ObservedWorkload]:
        selector = f"{EMD_LABEL}={emd}"
        found = [_workload("Deployment", d, d.spec.replicas or 0, d.status.ready_replicas)
                 for d in self.apps.list_namespaced_deployment(
                     namespace, label_selector=selector).items]
        found += [_workload("DaemonSet", d, d.status.desired_number_scheduled,
                            d.status.number_ready)
                  for d in self.apps.list_namespaced_daemon_set(
                      namespace, label_selector=selector).items]
        return found

    def apply_workload(self, manifest: dict[str, Any], spec_hash: str) -> str:
        """Create, or replace when its spec hash differs; 'created', 'replaced' or 'kept'."""
        meta = manifest["metadata"]
        meta.setdefault("annotations", {})[SPEC_HASH] = spec_hash
        kind, namespace, name = manifest["kind"], meta["namespace"], meta["name"]
        create, read, replace = self._workload_calls(kind)
        try:
            create(namespace, manifest)
            return "created"
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = read(name, namespace)
        if (current.metadata.annotations or {}).get(SPEC_HASH) == spec_hash:
            return "kept"
        meta["resourceVersion"] = current.metadata.resource_version
        replace(name, namespace, manifest)
        return "replaced"

    def patch_workload(self, kind: str, namespace: str, name: str,
                       patch: dict[str, Any]) -> None:
        call = (self.apps.patch_namespaced_deployment if kind == "Deployment"
                else self.apps.patch_namespaced_daemon_set)
        call(name, namespace, patch)

    def delete_workload(self, kind: str, namespace: str, name: str) -> None:
        call = (self.apps.delete_namespaced_deployment if kind == "Deployment"
                else self.apps.delete_namespaced_daemon_set)
        try:
            call(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def ensure_service(self, manifest: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_service(manifest["metadata"]["namespace"], manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def has_pod_monitors(self) -> bool:
        """Whether the Prometheus Operator's PodMonitor CRD is installed."""
        ext = client.ApiextensionsV1Api(self.api)
        found = ext.list_custom_resource_definition(
            field_selector="metadata.name=podmonitors.monitoring.coreos.com").items
        return bool(found)

    def ensure_pod_monitor(self, manifest: dict[str, Any]) -> None:
        try:
            self.custom.create_namespaced_custom_object(
                "monitoring.coreos.com", "v1", manifest["metadata"]["namespace"],
                "podmonitors", manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def patch_edge_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, EMD_PLURAL, name, {"status": status},
            _content_type=MERGE_PATCH)

    def _workload_calls(self, kind: str) -> tuple[Any, Any, Any]:
        if kind == "Deployment":
            return (self.apps.create_namespaced_deployment,
                    self.apps.read_namespaced_deployment,
                    self.apps.replace_namespaced_deployment)
        return (self.apps.create_namespaced_daemon_set, self.apps.read_namespaced_daemon_set,
                self.apps.replace_namespaced_daemon_set)

    def observed_jobs(self, namespace: str, cj: str) -> list[ObservedJob]:
        jobs = self.batch.list_namespaced_job(namespace, label_selector=f"{CJ_LABEL}={cj}")
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"{CJ_LABEL}={cj}")
        by_job: dict[str, list[Any]] = {}
        for pod in pods.items:
            by_job.setdefault((pod.metadata.labels or {}).get("job-name", ""), []).append(pod)
        return [_observe(job, by_job.get(job.metadata.name, [])) for job in jobs.items]

    def create_job(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when it already existed (adopted)."""
        try:
            self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace,
                                             propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type=MERGE_PATCH)

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            response = self.coordination.read_namespaced_lease(name, namespace,
                                                               _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise LeaderElectionError(f"reading lease {namespace}/{name}: HTTP {exc.status} "
                                      f"{exc.reason}") from exc
        lease = json.loads(response.data)
        spec = lease.get("spec") or {}
        return LeaseRecord(holder=spec.get("holderIdentity") or None,
                           duration_s=int(spec.get("leaseDurationSeconds") or 15),
                           transitions=int(spec.get("leaseTransitions") or 0),
                           resource_version=lease["metadata"]["resourceVersion"])

    def write_lease(self, namespace: str, name: str, spec: dict[str, Any],
                    resource_version: str | None) -> bool:
        """Create (``resource_version`` None) or replace the lease; False when someone else
        wrote it first (409)."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": spec}
        try:
            if resource_version is None:
                self.coordination.create_namespaced_lease(namespace, body)
            else:
                self.coordination.replace_namespaced_lease(name, namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise LeaderElectionError(f"writing lease {namespace}/{name}: HTTP {exc.status} "
                                      f"{exc.reason}") from exc

    def post_event(self, cj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event on ``cj`` (a CompilationJob or an EdgeModelDeployment)."""
        meta, now = cj["metadata"], utc_now()
        body = {"metadata": {"generateName": f"{meta['name']}.",
                             "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}",
                                   "kind": cj.get("kind", "CompilationJob"),
                                   "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message[:1024], "type": kind, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "neofleet-operator"}}
        self.core.create_namespaced_event(meta["namespace"], body)


def _workload(kind: str, obj: Any, desired: int | None, ready: int | None) -> ObservedWorkload:
    labels = obj.metadata.labels or {}
    selector = (obj.spec.template.spec.node_selector or {}) if kind == "DaemonSet" else {}
    return ObservedWorkload(
        name=obj.metadata.name, kind=kind, pool=labels.get(POOL_LABEL, ""),
        revision=labels.get(REVISION_LABEL, ""), desired=desired or 0, ready=ready or 0,
        replicas=obj.spec.replicas if kind == "Deployment" else None,
        parked=PARKED_LABEL in selector)


def _observe(job: Any, pods: list[Any]) -> ObservedJob:
    labels, status = job.metadata.labels or {}, job.status
    conditions = {c.type: c for c in status.conditions or []}
    failed = conditions.get("Failed")
    complete = conditions.get("Complete")
    latest = max(pods, key=lambda p: p.metadata.creation_timestamp, default=None)
    return ObservedJob(
        name=job.metadata.name, target=labels.get(TARGET_LABEL, ""),
        inputs_hash=labels.get(HASH_LABEL, ""),
        active=bool(status.active), succeeded=complete is not None and complete.status == "True",
        failed=failed is not None and failed.status == "True",
        failure=f"{failed.reason}: {failed.message}" if failed is not None else "",
        result=_result(latest), waiting=_waiting(latest),
        start_time=_time(status.start_time), completion_time=_time(status.completion_time))


def _result(pod: Any) -> dict[str, Any] | None:
    for container in (pod.status.container_statuses or []) if pod is not None else []:
        terminated = container.state.terminated if container.state else None
        if terminated is not None and terminated.message:
            try:
                parsed = json.loads(terminated.message)
            except ValueError:
                return {"ok": False, "reason": "ResultUntrusted",
                        "message": f"unreadable termination message: {terminated.message[:200]}"}
            return parsed if isinstance(parsed, dict) else None
    return None


def _waiting(pod: Any) -> str:
    if pod is None or pod.status.phase != "Pending":
        return ""
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"no node can run the compile pod: {cond.message}"
    return ""


def _time(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None
