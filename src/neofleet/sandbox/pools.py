"""Simulated node pools: what each Node of the sandbox looks like (pure).

A pool is a named group of identical Nodes. The defaults are the three kinds of hardware
the operator selects bundles for: x86_64 servers with AVX-512 (NFD-style CPU feature
labels), arm64 edge boxes, and a T4 GPU node (``nvidia.com/gpu`` capacity and the GPU
feature-discovery labels, tainted as GKE and the NVIDIA operator taint GPU nodes). The
node agent runs every pod on this machine, whatever the pool claims: the labels are what
the scheduler and the operator see, not what executes, except the architecture (an arm64
node's ``neofleet-runtime`` containers run under qemu-aarch64,
``neofleet.sandbox.agent.guest``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neofleet.sandbox.errors import StateError

POOL_LABEL = "neofleet.io/pool"
ARCH_LABEL = "kubernetes.io/arch"
SIMULATED_LABEL = "sandbox.neofleet.io/simulated"
KUBELET_VERSION = "v1.20.2"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"   # the apiserver's own rule


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: str = ""
    effect: str = Field(pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")


class Pool(BaseModel):
    """One pool: ``nodes`` Nodes named ``<name>-<i>`` with these labels and capacity."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=50)
    nodes: int = Field(default=1, ge=1, le=20)
    arch: str = Field(default="amd64", pattern="^(amd64|arm64)$")
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: dict[str, Annotated[str, Field(pattern=QUANTITY)]] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)


DEFAULT_POOLS: tuple[Pool, ...] = (
    Pool(name="cpu-amd64", nodes=2, arch="amd64", labels={
        "node.kubernetes.io/instance-type": "c6i.xlarge",
        **{f"feature.node.kubernetes.io/cpu-cpuid.{flag}": "true" for flag in (
            "AVX", "AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL",
            "AVX512VNNI")},
        "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
    }),
    Pool(name="edge-arm64", nodes=2, arch="arm64", labels={
        "node.kubernetes.io/instance-type": "raspberry-pi-4b",
        "feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true",
        "feature.node.kubernetes.io/cpu-model.vendor_id": "ARM",
    }, capacity={"cpu": "4", "memory": "4Gi"}),
    Pool(name="gpu-t4", nodes=1, arch="amd64", labels={
        "node.kubernetes.io/instance-type": "g4dn.xlarge",
        "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "Tesla-T4",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.memory": "15360",
        "nvidia.com/gpu.compute.major": "7",
        "nvidia.com/gpu.compute.minor": "5",
        "nvidia.com/cuda.driver.major": "535",
    }, capacity={"nvidia.com/gpu": "1"},
        taints=[Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")]),
)

_BASE_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}


def load_pools(path: Path | None) -> tuple[Pool, ...]:
    """The pools in a JSON/YAML file (a list of pools), or the defaults."""
    if path is None:
        return DEFAULT_POOLS
    import yaml  # the kubernetes client's dependency; only needed for a pools file

    try:
        raw = yaml.safe_load(path.read_text())
        pools = tuple(Pool.model_validate(item) for item in raw)
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        raise StateError(f"cannot read pools from {path}: {exc}") from exc
    if len({pool.name for pool in pools}) != len(pools):
        raise StateError(f"pool names repeat in {path}")
    return pools


def node_names(pool: Pool) -> list[str]:
    return [f"{pool.name}-{index}" for index in range(pool.nodes)]


def node_arch(pool: Pool) -> str:
    """The ``kubernetes.io/arch`` label of the pool's Nodes (its labels may set it)."""
    return pool.labels.get(ARCH_LABEL, pool.arch)


def node_manifest(pool: Pool, name: str) -> dict[str, Any]:
    """The Node object the agent registers for one node of a pool."""
    labels = {
        ARCH_LABEL: pool.arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        POOL_LABEL: pool.name,
        SIMULATED_LABEL: "true",
        **pool.labels,
    }
    capacity = {**_BASE_CAPACITY, **pool.capacity}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [taint.model_dump() for taint in pool.taints]},
        "status": node_status(pool, capacity),
    }


def node_status(pool: Pool, capacity: dict[str, str]) -> dict[str, Any]:
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": "localhost"}],
        "nodeInfo": {
            "architecture": pool.arch, "operatingSystem": "linux",
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": "neofleet-sandbox://processes",
            "osImage": "neofleet sandbox (pods run as local processes)",
            "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }


def ready_conditions(now: str) -> list[dict[str, str]]:
    """The node conditions a healthy kubelet reports, stamped with ``now``."""
    healthy = [("MemoryPressure", "KubeletHasSufficientMemory"),
               ("DiskPressure", "KubeletHasNoDiskPressure"),
               ("PIDPressure", "KubeletHasSufficientPID")]
    conditions = [{"type": kind, "status": "False", "reason": reason,
                   "message": "simulated", "lastHeartbeatTime": now,
                   "lastTransitionTime": now} for kind, reason in healthy]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "neofleet sandbox node agent is posting ready status",
                       "lastHeartbeatTime": now, "lastTransitionTime": now})
    return conditions
