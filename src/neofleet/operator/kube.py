"""The operator's only module that talks to the Kubernetes API (official client, sync).

Reads CompilationJobs, their Jobs and pods (turned into ``ObservedJob``), creates Jobs
("already exists" means adopt), deletes Jobs, patches status, posts Events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from neofleet.api import GROUP, VERSION
from neofleet.operator.planning.compilation import ObservedJob
from neofleet.operator.render.job import CJ_LABEL, HASH_LABEL, TARGET_LABEL

PLURAL = "compilationjobs"
MERGE_PATCH = "application/merge-patch+json"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def get_compilation_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name)
            return found
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_compilation_jobs(self, namespaces: list[str]) -> list[tuple[str, str]]:
        """(namespace, name) of every CompilationJob watched."""
        if not namespaces:
            found = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        else:
            found = [item for ns in namespaces for item in
                     self.custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                               PLURAL)["items"]]
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in found]

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

    def post_event(self, cj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta, now = cj["metadata"], utc_now()
        body = {"metadata": {"generateName": f"{meta['name']}.",
                             "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}",
                                   "kind": "CompilationJob", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message[:1024], "type": kind, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "neofleet-operator"}}
        self.core.create_namespaced_event(meta["namespace"], body)


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
