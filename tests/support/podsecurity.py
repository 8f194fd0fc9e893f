"""The `restricted` Pod Security Standard (Kubernetes docs, "Pod Security Standards",
policies of the baseline and restricted levels that apply to pod specs), as a checker for
rendered and operator-created pod specs. Returns the violations, empty when it passes."""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"{key} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']} uses {sorted(kinds - ALLOWED_VOLUMES)}")
    seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    for container in [*(pod.get("initContainers") or []), *pod.get("containers", [])]:
        found += _container(container, pod_ctx, seccomp)
    return found


def _container(container: dict[str, Any], pod_ctx: dict[str, Any],
               pod_seccomp: str | None) -> list[str]:
    name, ctx = container["name"], container.get("securityContext") or {}
    found = []
    if ctx.get("privileged"):
        found.append(f"{name}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation must be false")
    if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
        found.append(f"{name}: runAsNonRoot must be true")
    if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
        found.append(f"{name}: runAsUser 0")
    seccomp = (ctx.get("seccompProfile") or {}).get("type") or pod_seccomp
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        found.append(f"{name}: capabilities must drop ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{name}: adds capabilities {caps['add']}")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            found.append(f"{name}: hostPort")
    # neofleet's own rule on top of the standard: read-only root file systems
    if ctx.get("readOnlyRootFilesystem") is not True:
        found.append(f"{name}: readOnlyRootFilesystem must be true (neofleet's rule)")
    return found
