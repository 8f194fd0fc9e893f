"""Exactly the permissions the operator uses (no wildcards); the Helm chart grants these,
and the e2e tests run the operator as a ServiceAccount bound to nothing else."""

from __future__ import annotations

from typing import Any

from neofleet.api import GROUP

ACCOUNT, NAMESPACE = "neofleet-operator", "neofleet-system"
RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["compilationjobs"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["compilationjobs/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [GROUP], "resources": ["edgemodeldeployments"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["edgemodeldeployments/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
    # only used when the Prometheus Operator's PodMonitor CRD is installed
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["podmonitors"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # kopf watches CRDs to notice resources appearing and going (read-only)
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
]


def manifests(account: str = ACCOUNT, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The ClusterRole and its binding to the operator's ServiceAccount."""
    name = "neofleet-operator"
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name}, "rules": RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]
