"""CustomResourceDefinitions generated from the API models.

pydantic's JSON Schema is turned into a Kubernetes structural schema: ``$ref`` inlined,
``Optional[X]`` becomes ``X`` (absent = null), titles dropped, ``x-kubernetes-*`` hints
kept. ``write_crds`` writes ``crds/<plural>.neofleet.io.yaml``; ``neofleet crds``
calls it, and a test fails when the checked-in files differ from what it would write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from neofleet.api import GROUP, VERSION
from neofleet.api.compilationjob import CompilationJobSpec, CompilationJobStatus
from neofleet.api.edgemodeldeployment import EdgeModelDeploymentSpec, EdgeModelDeploymentStatus

_KEEP = ("type", "description", "properties", "required", "items", "enum", "pattern",
         "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
         "maxLength", "minItems", "maxItems", "default", "additionalProperties", "format")
# `kubectl get <short name>`. None may be one a built-in kind of Kubernetes uses (CronJob
# has "cj", and built-ins win: kubectl would list CronJobs); tests check these against
# BUILTIN_SHORT_NAMES and against a live API server's discovery.
SHORT_NAMES = {"CompilationJob": "cjob", "EdgeModelDeployment": "emd"}
# The short names of Kubernetes' built-in resources, 1.20 to 1.37 (kubectl api-resources).
BUILTIN_SHORT_NAMES = frozenset({
    "cm", "cs", "ep", "ev", "limits", "no", "ns", "po", "pv", "pvc", "quota", "rc", "sa",
    "svc", "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol",
    "pdb", "psp", "pc", "sc", "vac", "ip", "svm",
})


def structural(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _convert({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        return _convert({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    if "const" in node:
        out["enum"] = [node["const"]]
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key not in _KEEP:
            continue
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            continue    # `false` is not structural; unknown fields are pruned anyway
        elif key == "default" and value == "":
            continue    # the 1.20 apiserver reads an empty-string default as null and refuses
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out \
            and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _crd(kind: str, plural: str, short: str, spec: type[BaseModel], status: type[BaseModel],
         columns: list[dict[str, Any]]) -> dict[str, Any]:
    schema = {"type": "object", "required": ["spec"], "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": structural(spec), "status": structural(status)}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                           "singular": kind.lower(), "shortNames": [short],
                           "categories": ["neofleet"]},
                 "versions": [{"name": VERSION, "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "additionalPrinterColumns": columns,
                               "schema": {"openAPIV3Schema": schema}}]}}


def crds() -> list[dict[str, Any]]:
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    return [
        _crd("CompilationJob", "compilationjobs", SHORT_NAMES["CompilationJob"],
             CompilationJobSpec, CompilationJobStatus, [
                 {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                 {"name": "Targets", "type": "string", "jsonPath": ".status.succeeded",
                  "description": "targets succeeded / total"}, age]),
        _crd("EdgeModelDeployment", "edgemodeldeployments", SHORT_NAMES["EdgeModelDeployment"],
             EdgeModelDeploymentSpec, EdgeModelDeploymentStatus, [
                 {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                 {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
                 {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
                 {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep"}, age]),
    ]


def render(crd: dict[str, Any]) -> str:
    """Deterministic YAML (JSON is YAML; one key per line keeps diffs readable)."""
    import yaml

    body: str = yaml.safe_dump(crd, sort_keys=False, width=100)
    return "# Generated by `neofleet crds` from neofleet.api; do not edit.\n" + body


def write_crds(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in crds():
        path = folder / f"{crd['metadata']['name']}.yaml"
        path.write_text(render(crd))
        written.append(path)
    return written

