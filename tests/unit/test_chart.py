"""The Helm chart, linted and rendered offline with helm-python-sdk (Helm v4's library):
default values and every example values file; manifests valid for every Kubernetes version
kubernetes-validate ships within the chart's claim; RBAC exactly the operator's rules;
every pod the chart or the operator creates passes the `restricted` Pod Security
Standard; generated files in step with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.podsecurity import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "neofleet"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
VALUES = [None, *EXAMPLES]
helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")


def render(values_file: Path | None) -> list[dict[str, Any]]:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="neofleet", namespace="neofleet-system",
                            is_install=True)
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("values_file", VALUES, ids=lambda v: v.name if v else "defaults")
def test_the_chart_lints_clean(values_file: Path | None) -> None:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(CHART, values, strict=True, namespace="neofleet-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("values_file", VALUES, ids=lambda v: v.name if v else "defaults")
def test_rendered_manifests_validate_strictly_for_every_supported_version(
        values_file: Path | None) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    docs = render(values_file)
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]
    assert {d["kind"] for d in core} >= {"Deployment", "ServiceAccount", "ClusterRole",
                                          "ClusterRoleBinding"}
    for version in sorted(set(all_versions())):
        for doc in core:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_cluster_role_is_exactly_the_operators_rules() -> None:
    from neofleet.operator.rbac import RULES

    (role,) = [d for d in render(None) if d["kind"] == "ClusterRole"]
    assert role["rules"] == RULES
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
    assert not any("secrets" in r["resources"] for r in role["rules"])


def test_leader_election_is_one_lease_and_several_replicas_need_it() -> None:
    from neofleet.operator.rbac import leader_election_rules

    docs = {d["kind"]: d for d in render(None)}
    assert docs["Role"]["rules"] == leader_election_rules("neofleet-operator")
    assert docs["Role"]["metadata"]["namespace"] == "neofleet-system"
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    spec = docs["Deployment"]["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--leader-election-lease") + 1] == "neofleet-system/neofleet-operator"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    chart = helm.Chart.load(CHART)
    off = {"operator": {"leaderElection": {"enabled": False}}}
    plain = [d for t in chart.render(off, name="neofleet", namespace="ns",
                                     is_install=True).values()
             for d in yaml.safe_load_all(t) if d]
    assert not {"Role", "RoleBinding"} & {d["kind"] for d in plain}
    deployment = next(d for d in plain if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    two_without = {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}}
    with pytest.raises(Exception, match="needs operator.leaderElection"):
        chart.render(two_without, name="neofleet", namespace="ns", is_install=True)


def test_optional_objects_follow_the_values() -> None:
    kinds = {d["kind"] for d in render(None)}
    assert "ConfigMap" in kinds and "NetworkPolicy" in kinds
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    full = {d["kind"]: d for d in render(CHART / "examples" / "namespaced.yaml")}
    assert {"ServiceMonitor", "PrometheusRule"} <= set(full)
    assert full["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabels"] is True
    args = full["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args.count("--namespace") == 2 and "--prometheus-url" in args
    minimal = {d["kind"] for d in render(CHART / "examples" / "minimal.yaml")}
    assert not minimal & {"ConfigMap", "NetworkPolicy"}


def test_bad_values_are_refused_by_the_schema() -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(Exception, match="(?i)schema|additional|metricsPort"):
        chart.validate_schema({"operator": {"metricsPort": "ninety"}})
    with pytest.raises(Exception, match="(?i)schema|additional|unknownKey"):
        chart.validate_schema({"unknownKey": 1})


def test_every_pod_the_chart_or_the_operator_creates_is_restricted() -> None:
    from neofleet.api.edgemodeldeployment import EdgeModelDeploymentSpec
    from neofleet.operator.planning.artifacts import Candidate, Resolution
    from neofleet.operator.planning.compilation import DesiredJob
    from neofleet.operator.planning.rollout import DesiredWorkload
    from neofleet.operator.render.job import compile_job
    from neofleet.operator.render.runtime import workload

    pods = [d["spec"]["template"]["spec"] for d in render(None) if d["kind"] == "Deployment"]
    job = compile_job(DesiredJob("j", "t", "h", {"model": {"uri": "file:///m"}}, {}, [], {},
                                 60, 1), {"metadata": {"name": "c", "namespace": "n",
                                                       "uid": "u"}}, "img")
    pods.append(job["spec"]["template"]["spec"])
    spec = EdgeModelDeploymentSpec.model_validate(
        {"model": {"artifacts": [{"target": "x86_64", "uri": "oci://r/m@sha256:" + "1" * 64}]},
         "pools": [{"name": "p", "mode": "DaemonSet"}]})
    resolution = Resolution("p", Candidate("x86_64", "x86_64", "oci://r/m@sha256:" + "1" * 64,
                                           "sha256:" + "1" * 64))
    emd = {"apiVersion": "neofleet.io/v1alpha1",
           "metadata": {"name": "e", "namespace": "n", "uid": "u"}}
    shared = spec.runtime.model_copy(update={"bundle_cache_claim": "bundles"})
    for kind, runtime in (("Deployment", spec.runtime), ("DaemonSet", shared)):
        desired = DesiredWorkload("w", kind, spec.pools[0], "r", replicas=1,
                                  artifact=resolution)
        pods.append(workload(desired, emd, runtime)["spec"]["template"]["spec"])
    assert pods[-1]["volumes"][0] == {"name": "cache",
                                      "persistentVolumeClaim": {"claimName": "bundles"}}
    assert len(pods) == 4
    for pod in pods:
        assert restricted_violations(pod) == [], pod


def test_the_checker_catches_what_restricted_forbids() -> None:
    bad = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True},
                           "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    found = " | ".join(restricted_violations(bad))
    for expected in ("hostNetwork", "hostPath", "privileged", "allowPrivilegeEscalation",
                     "runAsNonRoot", "seccompProfile", "drop ALL", "hostPort",
                     "readOnlyRootFilesystem"):
        assert expected in found, expected


def test_generated_chart_files_match_the_code() -> None:
    from neofleet.api.crd import crds
    from neofleet.api.crd import render as render_crd
    from neofleet.operator.rbac import render_rules

    for crd in crds():
        path = CHART / "crds" / f"{crd['metadata']['name']}.yaml"
        assert path.read_text() == render_crd(crd), f"{path} drifted: run `neofleet crds`"
    assert (CHART / "files" / "rbac-rules.yaml").read_text() == render_rules(), \
        "files/rbac-rules.yaml drifted: run `neofleet crds`"
