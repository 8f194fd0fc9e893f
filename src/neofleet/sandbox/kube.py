"""The sandbox's bootstrap calls to the Kubernetes API: readiness, the operator's
ServiceAccount kubeconfig, applying manifests. (The node agent has its own module.)"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from neofleet.sandbox.errors import ClusterError
from neofleet.sandbox.kubeconfig import write_token_kubeconfig
from neofleet.sandbox.pki import Pki

OPERATOR_NAMESPACE = "neofleet-system"
OPERATOR_ACCOUNT = "neofleet-operator"


def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(str(kubeconfig))


def wait_ready(kubeconfig: Path, nodes: int, timeout_s: float,
               agent_running: Callable[[], bool]) -> None:
    """Until every simulated node is Ready and ``default`` has its ServiceAccount (pods
    are refused before the service-account controller made it)."""
    core = client.CoreV1Api(api_client(kubeconfig))
    deadline = time.monotonic() + timeout_s
    seen = "nothing"
    while time.monotonic() < deadline:
        if not agent_running():
            raise ClusterError("the node agent exited")
        try:
            ready = [n.metadata.name for n in core.list_node().items if _is_ready(n)]
            accounts = core.list_namespaced_service_account("default").items
            seen = f"{len(ready)}/{nodes} nodes Ready, default ServiceAccount: {bool(accounts)}"
            if len(ready) >= nodes and accounts:
                return
        except (ApiException, OSError) as exc:
            seen = str(exc)
        time.sleep(0.2)
    raise ClusterError(f"the cluster did not become ready in {timeout_s:.0f} s ({seen})")


def _is_ready(node: Any) -> bool:
    conditions = node.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def make_operator_kubeconfig(admin: Path, path: Path, pki: Pki, server: str,
                             rbac: Iterable[Path]) -> Path:
    """A kubeconfig for ServiceAccount neofleet-system/neofleet-operator, bound to exactly
    the RBAC in ``rbac`` (files of Roles, ClusterRoles and bindings) and nothing else."""
    api = api_client(admin)
    core = client.CoreV1Api(api)
    apply_all(api, [{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": OPERATOR_NAMESPACE}},
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}}])
    for manifest_file in rbac:
        apply_all(api, load_manifests(manifest_file))
    token = _wait_token(core, timeout_s=30)
    return write_token_kubeconfig(path, server, pki, OPERATOR_ACCOUNT, token,
                                  OPERATOR_NAMESPACE)


def _wait_token(core: client.CoreV1Api, timeout_s: float) -> str:
    """The token the 1.20 token controller puts in the account's Secret."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        account = core.read_namespaced_service_account(OPERATOR_ACCOUNT, OPERATOR_NAMESPACE)
        for ref in account.secrets or []:
            secret = core.read_namespaced_secret(ref.name, OPERATOR_NAMESPACE)
            if secret.type == "kubernetes.io/service-account-token" and secret.data \
                    and "token" in secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        time.sleep(0.2)
    raise ClusterError(f"no token for ServiceAccount {OPERATOR_ACCOUNT} after {timeout_s} s")


def load_manifests(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply_all(api: client.ApiClient, manifests: Iterable[dict[str, Any]]) -> None:
    """Create each object; one that exists is replaced (server-side apply is 1.22+)."""
    resources = dynamic.DynamicClient(api).resources
    for manifest in manifests:
        resource = resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        namespace = manifest["metadata"].get("namespace")
        try:
            resource.create(body=manifest, namespace=namespace)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = resource.get(name=manifest["metadata"]["name"], namespace=namespace)
            manifest["metadata"]["resourceVersion"] = current.metadata.resourceVersion
            resource.replace(body=manifest, namespace=namespace)


def wait_established(api: client.ApiClient, crds: Iterable[dict[str, Any]],
                     timeout_s: float = 60) -> None:
    """Until every CustomResourceDefinition of ``crds`` is Established (its objects can be
    created): on a loaded machine that takes longer than any fixed pause."""
    ext = client.ApiextensionsV1Api(api)
    names = [c["metadata"]["name"] for c in crds
             if c.get("kind") == "CustomResourceDefinition"]
    deadline = time.monotonic() + timeout_s
    for name in names:
        while not any(c.type == "Established" and c.status == "True"
                      for c in ext.read_custom_resource_definition(name).status.conditions
                      or []):
            if time.monotonic() > deadline:
                raise ClusterError(f"CustomResourceDefinition {name} not Established after "
                                   f"{timeout_s:.0f} s")
            time.sleep(0.2)
