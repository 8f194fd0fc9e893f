"""A compile Job manifest from a ``DesiredJob`` (pure).

Pod security: non-root (UID 65532), no privilege escalation, every capability dropped,
seccomp RuntimeDefault, read-only root file system with scratch in an emptyDir, no
service-account token. The request travels in an env var; the result comes back in the
termination message.
"""

from __future__ import annotations

import json
from typing import Any

from neofleet.api import API_VERSION
from neofleet.operator.planning.compilation import DesiredJob

MANAGED_BY = "app.kubernetes.io/managed-by"
CJ_LABEL = "neofleet.io/compilationjob"
TARGET_LABEL = "neofleet.io/target"
HASH_LABEL = "neofleet.io/inputs-hash"
SCRATCH = "/scratch"
PVC_ROOT = "/models"


S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_REGION", "AWS_ENDPOINT_URL_S3")
REQUIRED_S3 = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def compile_job(desired: DesiredJob, cj: dict[str, Any], image: str) -> dict[str, Any]:
    meta = cj["metadata"]
    labels = {MANAGED_BY: "neofleet", CJ_LABEL: meta["name"], TARGET_LABEL: desired.target,
              HASH_LABEL: desired.inputs_hash}
    owner = {"apiVersion": API_VERSION, "kind": "CompilationJob", "name": meta["name"],
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": desired.name, "namespace": meta["namespace"], "labels": labels,
                     "ownerReferences": [owner]},
        "spec": {"backoffLimit": desired.backoff_limit,
                 "activeDeadlineSeconds": desired.deadline_s,
                 "template": {"metadata": {"labels": labels},
                              "spec": _pod_spec(desired, image)}},
    }


def _credential_env(secret: str | None) -> list[dict[str, Any]]:
    """The S3 settings from the model's credentials Secret; the operator never reads it."""
    if not secret:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key,
                                                         "optional": key not in REQUIRED_S3}}}
            for key in S3_SECRET_KEYS]


def _pod_spec(desired: DesiredJob, image: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH}]
    uri = str(desired.request["model"]["uri"])
    if uri.startswith("pvc://"):
        claim = uri[len("pvc://"):].split("/", 1)[0]
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim,
                                                                   "readOnly": True}})
        mounts.append({"name": "model", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    container = {
        "name": "compile", "image": image,
        "args": ["compile-pod", "--result", "/dev/termination-log"],
        "env": [{"name": "NEOFLEET_COMPILE_REQUEST",
                 "value": json.dumps(desired.request, sort_keys=True)},
                {"name": "NEOFLEET_PVC_ROOT", "value": PVC_ROOT},
                {"name": "TMPDIR", "value": SCRATCH},
                *_credential_env(desired.request["model"].get("credentialsSecret"))],
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if desired.resources:
        container["resources"] = desired.resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container], "volumes": volumes,
    }
    if desired.node_selector:
        spec["nodeSelector"] = desired.node_selector
    if desired.tolerations:
        spec["tolerations"] = desired.tolerations
    return spec
