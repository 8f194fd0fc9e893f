"""The CompilationJob API, CRD generation and the pure planner/renderer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from neofleet.api.compilationjob import CompilationJobSpec
from neofleet.api.crd import crds, render
from neofleet.operator.conditions import REASONS
from neofleet.operator.planning.compilation import (
    ObservedJob,
    Placement,
    Settings,
    plan_compilation,
)
from neofleet.operator.render.job import compile_job

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
PLACEMENTS = {"x86_64-avx512": Placement("x86_64", cpu_features=("AVX512F",)),
              "aarch64": Placement("aarch64", cpu_features=("ASIMD",)),
              "nvidia-t4": Placement("x86_64", gpu=True, compute_capability="7.5")}
SETTINGS = Settings(compiler_image="neofleet-compiler:test")
NOW = "2026-12-01T00:00:00Z"


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": "file:///models/m.onnx", "framework": "onnx"},
        "targets": [{"name": "cpu", "device": "x86_64-avx512"},
                    {"name": "edge", "device": "aarch64"}],
        "output": {"repository": "oci://127.0.0.1:5000/models/m"},
    }
    base.update(changes)
    return base


def plan(s: dict[str, Any], jobs: list[ObservedJob] | None = None,
         previous: dict[str, Any] | None = None, generation: int = 1):
    return plan_compilation("m", generation, s, previous, jobs or [], PLACEMENTS.get,
                            SETTINGS, NOW)


def test_checked_in_crds_match_the_models() -> None:
    for crd in crds():
        path = ROOT / "crds" / f"{crd['metadata']['name']}.yaml"
        assert path.read_text() == render(crd), f"{path} drifted: run `neofleet crds`"


def test_crd_schemas_are_structural() -> None:
    def walk(node: dict[str, Any], where: str) -> None:
        assert "$ref" not in node and "anyOf" not in node, where
        assert node.get("additionalProperties") is not False, where
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            assert "type" in node, where
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")
    for crd in crds():
        version = crd["spec"]["versions"][0]
        walk(version["schema"]["openAPIV3Schema"], crd["metadata"]["name"])
        assert version["subresources"] == {"status": {}}


def test_short_names_are_ours_alone() -> None:
    """`kubectl get cj` lists CronJobs: a built-in's short name wins over a CRD's."""
    from neofleet.api.crd import BUILTIN_SHORT_NAMES, SHORT_NAMES

    short = {c["spec"]["names"]["kind"]: c["spec"]["names"]["shortNames"] for c in crds()}
    assert short == {kind: [name] for kind, name in SHORT_NAMES.items()}
    assert {"cj", "ds", "deploy", "po", "svc"} <= BUILTIN_SHORT_NAMES  # the list is real
    assert not set(SHORT_NAMES.values()) & BUILTIN_SHORT_NAMES
    plurals = {c["spec"]["names"]["plural"] for c in crds()}
    assert not set(SHORT_NAMES.values()) & plurals


@pytest.mark.parametrize(("change", "message"), [
    ({"targets": [{"name": "a", "device": "aarch64", "platform": {"arch": "aarch64"}}]},
     "exactly one of device or platform"),
    ({"targets": [{"name": "a", "device": "aarch64"}, {"name": "a", "device": "aarch64"}]},
     "target names repeat"),
    ({"model": {"uri": "ftp://x/m.onnx", "framework": "onnx"}}, "should match pattern"),
    ({"model": {"uri": "file:///m", "framework": "pickle"}}, "Input should be"),
])
def test_spec_rules_the_schema_cannot_enforce_on_1_20(change: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CompilationJobSpec.model_validate(spec(**change))


def test_first_plan_creates_one_job_per_target_with_placement() -> None:
    result = plan(spec())
    assert [d.target for d in result.create] == ["cpu", "edge"]
    cpu, edge = result.create
    assert cpu.node_selector == {"kubernetes.io/arch": "amd64",
                                 "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true"}
    assert edge.node_selector["kubernetes.io/arch"] == "arm64"
    assert result.status.phase == "Pending" and result.status.succeeded == "0/2"
    assert plan(spec()).create == result.create, "names and requests are deterministic"


def test_gpu_targets_request_a_gpu_of_their_kind() -> None:
    result = plan(spec(targets=[{"name": "t4", "device": "nvidia-t4"}]))
    job = result.create[0]
    assert job.resources == {"limits": {"nvidia.com/gpu": "1"}}
    assert job.node_selector["nvidia.com/gpu.compute.major"] == "7"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
        in job.tolerations


def observed(desired: Any, **state: Any) -> ObservedJob:
    return ObservedJob(name=desired.name, target=desired.target,
                       inputs_hash=desired.inputs_hash, **state)


def ok_result(target: str) -> dict[str, Any]:
    return {"ok": True, "target": target,
            "artifact": {"uri": f"oci://127.0.0.1:5000/models/m@{DIGEST}", "digest": DIGEST},
            "backend": "tvm", "verification": {"maxAbsError": 1e-6}, "benchmark_ms": 1.5,
            "compiler": {"neofleet": "0.1.0"}}


def test_existing_jobs_are_adopted_and_results_fill_the_status() -> None:
    cpu, edge = plan(spec()).create
    jobs = [observed(cpu, succeeded=True, result=ok_result("cpu"), start_time=NOW,
                     completion_time=NOW),
            observed(edge, active=True)]
    result = plan(spec(), jobs)
    assert result.create == [] and result.delete == []
    rows = {r.name: r for r in result.status.targets}
    assert rows["cpu"].phase == "Succeeded" and rows["cpu"].artifact.digest == DIGEST
    assert rows["cpu"].benchmark_ms == 1.5 and rows["cpu"].backend == "tvm"
    assert rows["edge"].phase == "Compiling" and result.status.phase == "Compiling"
    assert ("Normal", "TargetSucceeded", f"cpu: tvm bundle oci://127.0.0.1:5000/models/m@"
            f"{DIGEST}") in result.events


def test_a_success_without_a_digest_is_not_trusted() -> None:
    cpu, edge = plan(spec()).create
    result = plan(spec(), [observed(cpu, succeeded=True, result={"ok": True}),
                           observed(edge, failed=True, failure="BackoffLimitExceeded: x",
                                    result={"ok": False, "reason": "VerificationFailed",
                                            "message": "max abs error 0.5"})])
    rows = {r.name: r for r in result.status.targets}
    assert (rows["cpu"].phase, rows["cpu"].reason) == ("Failed", "ResultUntrusted")
    assert (rows["edge"].reason, rows["edge"].message) == ("VerificationFailed",
                                                           "max abs error 0.5")
    assert result.status.phase == "Failed"
    failed = next(c for c in result.status.conditions if c.type == "Failed")
    assert failed.status == "True" and "VerificationFailed" in failed.message


def test_a_changed_target_gets_a_new_job_and_the_old_one_is_deleted() -> None:
    cpu, edge = plan(spec()).create
    jobs = [observed(cpu, succeeded=True, result=ok_result("cpu")),
            observed(edge, succeeded=True, result=ok_result("edge"))]
    changed = spec(targets=[{"name": "cpu", "device": "x86_64-avx512"},
                            {"name": "edge", "device": "aarch64", "backend": "tvm"}])
    result = plan(changed, jobs, generation=2)
    assert result.delete == [edge.name]
    assert [d.target for d in result.create] == ["edge"]
    assert {r.name: r.phase for r in result.status.targets} == {"cpu": "Succeeded",
                                                                "edge": "Pending"}


def test_parallelism_limits_the_jobs_created() -> None:
    targets = [{"name": f"t{i}", "device": "aarch64"} for i in range(5)]
    result = plan(spec(targets=targets, parallelism=2))
    assert len(result.create) == 2
    waiting = [r for r in result.status.targets if r.message.startswith("waiting")]
    assert len(waiting) == 3


def test_invalid_and_unknown_specs_fail_with_documented_reasons() -> None:
    bad = plan(spec(targets=[{"name": "x", "device": "aarch64", "platform": {"arch": "aarch64"}}]))
    assert bad.status.phase == "Failed" and bad.create == []
    reasons = {c.type: c.reason for c in bad.status.conditions}
    assert reasons["Failed"] == "InvalidSpec" and set(reasons.values()) <= set(REASONS)
    unknown = plan(spec(targets=[{"name": "x", "device": "cray-1"}]))
    assert next(c for c in unknown.status.conditions if c.type == "Failed").reason == \
        "UnknownTarget"


def test_a_pending_gpu_pod_says_why() -> None:
    (t4,) = plan(spec(targets=[{"name": "t4", "device": "nvidia-t4"}])).create
    result = plan(spec(targets=[{"name": "t4", "device": "nvidia-t4"}]),
                  [observed(t4, active=True, waiting="no node can run the compile pod: "
                            "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.")])
    compiling = next(c for c in result.status.conditions if c.type == "Compiling")
    assert compiling.reason == "WaitingForNode" and "nvidia.com/gpu" in compiling.message


def test_the_compile_job_is_locked_down_and_owned() -> None:
    (desired,) = plan(spec(targets=[{"name": "cpu", "device": "x86_64-avx512"}])).create
    cj = {"metadata": {"name": "m", "namespace": "ns", "uid": "u1"}}
    job = compile_job(desired, cj, SETTINGS.compiler_image)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CompilationJob", "u1", True)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    request = json.loads(container["env"][0]["value"])
    assert request["target"] == {"name": "cpu", "device": "x86_64-avx512", "backend": "auto",
                                 "compilerOptions": {}}


def test_s3_credentials_reach_the_pod_from_the_named_secret_only() -> None:
    model = {"uri": "s3://models/m.onnx", "framework": "onnx", "credentialsSecret": "store"}
    (desired,) = plan(spec(model=model, targets=[{"name": "cpu", "device": "aarch64"}])).create
    job = compile_job(desired, {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}},
                      SETTINGS.compiler_image)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_REGION", "AWS_ENDPOINT_URL_S3"}
    assert {r["name"] for r in refs.values()} == {"store"}
    assert [n for n, r in refs.items() if not r["optional"]] == ["AWS_ACCESS_KEY_ID",
                                                                 "AWS_SECRET_ACCESS_KEY"]
    (plain,) = plan(spec(targets=[{"name": "cpu", "device": "aarch64"}])).create
    job = compile_job(plain, {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}},
                      SETTINGS.compiler_image)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert not any("valueFrom" in e for e in container["env"])
