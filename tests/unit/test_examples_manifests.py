"""The example manifests the README applies are valid: the apiserver's schema (the CRD's
openAPIV3Schema, checked with jsonschema) and the operator's own validation (the models)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from neofleet.api.compilationjob import CompilationJobSpec
from neofleet.api.crd import crds
from neofleet.api.edgemodeldeployment import EdgeModelDeploymentSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {"CompilationJob": CompilationJobSpec, "EdgeModelDeployment": EdgeModelDeploymentSpec}


@pytest.mark.parametrize("name", ["compilationjob.yaml", "edgemodeldeployment.yaml"])
def test_example_manifests_validate(name: str) -> None:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    crd = next(c for c in crds() if c["spec"]["names"]["kind"] == doc["kind"])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate(doc)   # OpenAPI v3 schemas are draft-4-like
    MODELS[doc["kind"]].model_validate(doc["spec"])
