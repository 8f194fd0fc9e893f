"""Choose each pool's bundle (pure): which compiled artifact fits the pool's nodes.

A bundle's target says what a node must have to run it, as node labels: the architecture
(``kubernetes.io/arch``), the CPU features it was compiled for (NFD
``feature.node.kubernetes.io/cpu-cpuid.*``) and, for GPU bundles, the compute capability
(``nvidia.com/gpu.compute.major/minor``). A pool with ``target: auto`` gets the candidate
whose required labels every node of the pool has, preferring the most specific one (the
most required labels: ``x86_64-avx512`` over ``x86_64``); an explicit ``target`` names a
CompilationJob target or a catalogue preset. A pool nothing fits gets
``NoArtifactForPool`` with the catalogue presets that would fit, so the user knows what to
compile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from neofleet.api.edgemodeldeployment import Pool
from neofleet.operator.planning.compilation import ARCH_LABELS, NFD_CPUID, Placement


@dataclass(frozen=True)
class Candidate:
    """A verified artifact and the node labels its target requires."""

    target: str                      # the CompilationJob's target name (or the preset)
    device: str | None               # the catalogue preset, when known
    uri: str
    digest: str
    requires: Mapping[str, str] = field(default_factory=dict)
    hardware_verified: bool = True   # False: the first runtime pod must verify it


@dataclass(frozen=True)
class Resolution:
    pool: str
    candidate: Candidate | None
    reason: str = ""
    message: str = ""


def required_labels(placement: Placement) -> dict[str, str]:
    """The labels a node must carry to run a bundle built for ``placement``."""
    labels = {"kubernetes.io/arch": ARCH_LABELS.get(placement.arch, placement.arch)}
    labels.update({f"{NFD_CPUID}{feature}": "true" for feature in placement.cpu_features})
    if placement.gpu and placement.compute_capability:
        major, _, minor = placement.compute_capability.partition(".")
        labels.update({"nvidia.com/gpu.compute.major": major,
                       "nvidia.com/gpu.compute.minor": minor})
    return labels


def candidates_from_compilation(cj: Mapping[str, Any],
                                placements: Mapping[str, Placement]) -> list[Candidate]:
    """The succeeded targets of a CompilationJob (its status rows carry the digests)."""
    devices = {t.get("name"): t for t in cj.get("spec", {}).get("targets", [])}
    found = []
    for row in cj.get("status", {}).get("targets", []):
        artifact = row.get("artifact") or {}
        if row.get("phase") != "Succeeded" or not artifact.get("digest"):
            continue
        target = devices.get(row["name"], {})
        placement = _placement_of(target, placements)
        found.append(Candidate(row["name"], target.get("device"), artifact["uri"],
                               artifact["digest"],
                               required_labels(placement) if placement else {},
                               hardware_verified=row.get("hardwareVerified") is not False))
    return found


def candidates_from_list(artifacts: Sequence[Mapping[str, str]],
                         placements: Mapping[str, Placement]) -> list[Candidate]:
    """Explicit ``spec.model.artifacts``: ``target`` is a catalogue preset."""
    found = []
    for item in artifacts:
        placement = placements.get(item["target"])
        digest = item["uri"].rsplit("@", 1)[-1]
        # the operator never pulls a bundle to read its meta: a GPU preset's explicit
        # artifact is treated as not verified on hardware (the first pod checks it)
        found.append(Candidate(item["target"], item["target"] if placement else None,
                               item["uri"], digest,
                               required_labels(placement) if placement else {},
                               hardware_verified=not (placement and placement.gpu)))
    return found


def resolve(pools: Sequence[Pool], nodes: Sequence[Mapping[str, str]],
            candidates: Sequence[Candidate],
            placements: Mapping[str, Placement]) -> list[Resolution]:
    """One resolution per pool; ``nodes`` are the labels of every node in the cluster."""
    return [_resolve_pool(pool, _pool_nodes(pool, nodes), candidates, placements)
            for pool in pools]


def _resolve_pool(pool: Pool, nodes: list[Mapping[str, str]], candidates: Sequence[Candidate],
                  placements: Mapping[str, Placement]) -> Resolution:
    if pool.target != "auto":
        named = [c for c in candidates if pool.target in (c.target, c.device)]
        if named:
            return Resolution(pool.name, named[0])
        have = ", ".join(sorted({c.target for c in candidates})) or "none"
        return Resolution(pool.name, None, "NoArtifactForPool",
                          f"pool {pool.name} asks for target {pool.target}; the artifacts "
                          f"are for: {have}")
    if not nodes:
        return Resolution(pool.name, None, "NoNodesInPool",
                          f"no node matches pool {pool.name}'s nodeSelector "
                          f"{dict(pool.node_selector)}; target auto needs nodes to look at")
    fitting = [c for c in candidates if c.requires and all(_fits(c.requires, n) for n in nodes)]
    if fitting:
        best = max(fitting, key=lambda c: (len(c.requires), c.target))
        return Resolution(pool.name, best)
    would_fit = sorted(name for name, placement in placements.items()
                       if all(_fits(required_labels(placement), n) for n in nodes))
    have = ", ".join(sorted({c.target for c in candidates})) or "none"
    return Resolution(pool.name, None, "NoArtifactForPool",
                      f"no artifact fits pool {pool.name} (artifacts for: {have}); targets "
                      f"that would fit its nodes: {', '.join(would_fit) or 'none'}")


def _pool_nodes(pool: Pool, nodes: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    return [n for n in nodes if _fits(pool.node_selector, n)]


def _fits(required: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in required.items())


def _placement_of(target: Mapping[str, Any],
                  placements: Mapping[str, Placement]) -> Placement | None:
    if target.get("device"):
        return placements.get(str(target["device"]))
    platform = target.get("platform")
    if not platform:
        return None
    return Placement(arch=str(platform.get("arch", "")),
                     gpu=platform.get("accelerator", "none") != "none",
                     compute_capability=platform.get("computeCapability"))
