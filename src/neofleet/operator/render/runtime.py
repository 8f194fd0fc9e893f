"""Runtime workloads and Services from a ``DesiredWorkload`` (pure).

Each pod runs ``neofleet serve oci://…@sha256:…``: the server pulls the bundle by digest,
verifies every file's digest before loading, and reports ready on ``/v2/health/ready``
only after warm-up. Metric labels come from the flags (``--name`` = the
EdgeModelDeployment, ``--revision``, ``--pool``, ``--target``). Pod security fits the
``restricted`` Pod Security Standard; ``/tmp`` is an emptyDir, and so is the bundle
cache unless ``spec.runtime.bundleCacheClaim`` names a PersistentVolumeClaim to share.
"""

from __future__ import annotations

from typing import Any

from neofleet.api.edgemodeldeployment import RuntimeSettings
from neofleet.operator.planning.rollout import DesiredWorkload
from neofleet.operator.render.job import MANAGED_BY

EMD_LABEL = "neofleet.io/edgemodeldeployment"
POOL_LABEL = "neofleet.io/pool"
REVISION_LABEL = "neofleet.io/revision"
TARGET_LABEL = "neofleet.io/target"
PARKED_LABEL = "neofleet.io/parked"      # no node has it: a parked DaemonSet runs no pod
APP = {"app.kubernetes.io/name": "neofleet-runtime", MANAGED_BY: "neofleet-operator"}
PORT = 8080
CACHE = "/var/cache/neofleet"
DRAIN_S = 10


def selector_labels(emd: str, pool: str, revision: str) -> dict[str, str]:
    return {EMD_LABEL: emd, POOL_LABEL: pool, REVISION_LABEL: revision}


def workload(desired: DesiredWorkload, emd: dict[str, Any],
             runtime: RuntimeSettings) -> dict[str, Any]:
    """The whole Deployment or DaemonSet (``desired.artifact`` must be set)."""
    assert desired.artifact is not None and desired.artifact.candidate is not None
    meta = emd["metadata"]
    labels = {**APP, **selector_labels(meta["name"], desired.pool.name, desired.revision),
              TARGET_LABEL: desired.artifact.candidate.target[:63]}
    owner = {"apiVersion": emd["apiVersion"], "kind": "EdgeModelDeployment",
             "name": meta["name"], "uid": meta["uid"], "controller": True,
             "blockOwnerDeletion": True}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(meta["name"], desired.pool.name,
                                                    desired.revision)},
        "template": {"metadata": {"labels": labels},
                     "spec": _pod_spec(desired, meta["name"], runtime)}}
    if desired.kind == "Deployment":
        spec["replicas"] = desired.replicas or 0
        spec["strategy"] = {"type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    else:
        # the canary's node set changes by weight; existing pods must not be replaced
        spec["updateStrategy"] = {"type": "OnDelete"}
    return {"apiVersion": "apps/v1", "kind": desired.kind,
            "metadata": {"name": desired.name, "namespace": meta["namespace"],
                         "labels": labels, "ownerReferences": [owner]},
            "spec": spec}


def scale_patch(desired: DesiredWorkload) -> dict[str, Any]:
    """A merge patch that only resizes an existing workload (its template is kept)."""
    if desired.kind == "Deployment":
        return {"spec": {"replicas": desired.replicas or 0}}
    parked = "true" if desired.parked else None
    return {"spec": {"template": {"spec": {"nodeSelector": {PARKED_LABEL: parked}}}}}


def service(emd: dict[str, Any], pool: str) -> dict[str, Any]:
    """One Service per pool, selecting every revision's pods (traffic follows pod counts)."""
    meta = emd["metadata"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(meta["name"], pool),
                         "namespace": meta["namespace"],
                         "labels": {**APP, EMD_LABEL: meta["name"], POOL_LABEL: pool},
                         "ownerReferences": [{"apiVersion": emd["apiVersion"],
                                              "kind": "EdgeModelDeployment",
                                              "name": meta["name"], "uid": meta["uid"],
                                              "controller": True}]},
            "spec": {"selector": {EMD_LABEL: meta["name"], POOL_LABEL: pool},
                     "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]}}


def pod_monitor(emd: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor scraping every runtime pod of ``emd`` (made only
    when the cluster has the PodMonitor CRD). ``honorLabels`` keeps the runtime's own
    ``pool``/``revision``/``target`` labels over any of the target's."""
    meta = emd["metadata"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": {**APP, EMD_LABEL: meta["name"]},
                         "ownerReferences": [{"apiVersion": emd["apiVersion"],
                                              "kind": "EdgeModelDeployment",
                                              "name": meta["name"], "uid": meta["uid"],
                                              "controller": True}]},
            "spec": {"selector": {"matchLabels": {EMD_LABEL: meta["name"]}},
                     "podMetricsEndpoints": [{"port": "http", "path": "/metrics",
                                              "honorLabels": True}]}}


def service_name(emd: str, pool: str) -> str:
    return f"{emd[:40].rstrip('-')}-{pool[:20].rstrip('-')}"


def _pod_spec(desired: DesiredWorkload, emd: str, runtime: RuntimeSettings) -> dict[str, Any]:
    assert desired.artifact is not None and desired.artifact.candidate is not None
    pool = desired.pool
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(runtime.shutdown_delay_seconds) + DRAIN_S + 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(desired, emd, runtime)],
        "volumes": [_cache_volume(runtime), {"name": "tmp", "emptyDir": {}}],
    }
    selector = dict(pool.node_selector)
    if desired.parked:
        selector[PARKED_LABEL] = "true"
    if selector:
        spec["nodeSelector"] = selector
    if pool.tolerations:
        spec["tolerations"] = [t.wire() for t in pool.tolerations]
    if desired.nodes is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In",
                "values": list(desired.nodes)}]}]}}}
    return spec


def _cache_volume(runtime: RuntimeSettings) -> dict[str, Any]:
    if runtime.bundle_cache_claim is None:
        return {"name": "cache", "emptyDir": {}}
    return {"name": "cache",
            "persistentVolumeClaim": {"claimName": runtime.bundle_cache_claim}}


def _container(desired: DesiredWorkload, emd: str, runtime: RuntimeSettings) -> dict[str, Any]:
    assert desired.artifact is not None and desired.artifact.candidate is not None
    candidate = desired.artifact.candidate
    args = ["serve", candidate.uri, "--host", "0.0.0.0", "--port", str(PORT),  # noqa: S104
            "--name", emd, "--revision", desired.revision, "--pool", desired.pool.name,
            "--target", candidate.target, "--cache-dir", CACHE,
            "--drain-seconds", str(DRAIN_S),
            "--shutdown-delay-seconds", str(runtime.shutdown_delay_seconds)]
    for flag, value in (("--threads", runtime.threads), ("--max-batch", runtime.max_batch),
                        ("--batch-timeout-ms", runtime.batch_timeout_ms)):
        if value is not None:
            args += [flag, str(value)]
    container: dict[str, Any] = {
        "name": "runtime", "image": runtime.image, "args": args,
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [{"name": "TMPDIR", "value": "/tmp"}],  # noqa: S108
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT},
                           "periodSeconds": 1, "failureThreshold": 2},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE},
                         {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if desired.pool.resources:
        container["resources"] = desired.pool.resources.wire()
    return container
