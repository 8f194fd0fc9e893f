"""The EdgeModelDeployment planners, driven directly: artifact choice per pool from node
labels, and the rollout state machine run against a simulated world in which every
workload the plan asks for becomes ready at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neofleet.api.edgemodeldeployment import EdgeModelDeploymentSpec, Measurement
from neofleet.operator.conditions import REASONS
from neofleet.operator.planning.analysis import Query, evaluate, queries
from neofleet.operator.planning.artifacts import (
    candidates_from_compilation,
    resolve,
)
from neofleet.operator.planning.rollout import (
    DeploymentPlan,
    ObservedWorkload,
    World,
    analysis_due,
    parse_duration,
    plan_deployment,
)
from neofleet.operator.reconcile import placements

NFD = "feature.node.kubernetes.io/cpu-cpuid."
AVX512 = {f"{NFD}{f}": "true" for f in ("AVX", "AVX2", "FMA3", "AVX512F", "AVX512BW",
                                         "AVX512CD", "AVX512DQ", "AVX512VL")}
NODES = {
    "cpu-1": {"kubernetes.io/arch": "amd64", "neofleet.io/pool": "cpu", **AVX512},
    "cpu-2": {"kubernetes.io/arch": "amd64", "neofleet.io/pool": "cpu", **AVX512},
    "arm-1": {"kubernetes.io/arch": "arm64", "neofleet.io/pool": "edge", f"{NFD}ASIMD": "true"},
    "arm-2": {"kubernetes.io/arch": "arm64", "neofleet.io/pool": "edge", f"{NFD}ASIMD": "true"},
    "gpu-1": {"kubernetes.io/arch": "amd64", "neofleet.io/pool": "gpu",
              "nvidia.com/gpu.compute.major": "7", "nvidia.com/gpu.compute.minor": "5"},
}
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def cj(targets: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {"spec": {"targets": [{"name": n, "device": d} for n, (d, _) in targets.items()]},
            "status": {"targets": [{"name": n, "phase": "Succeeded",
                                    "artifact": {"uri": f"oci://r/m@{digest}",
                                                 "digest": digest}}
                                   for n, (_, digest) in targets.items()]}}


def spec(**rollout: Any) -> EdgeModelDeploymentSpec:
    pools = rollout.pop("pools", [
        {"name": "cpu", "nodeSelector": {"neofleet.io/pool": "cpu"}, "replicas": 4},
        {"name": "edge", "nodeSelector": {"neofleet.io/pool": "edge"}, "mode": "DaemonSet"}])
    return EdgeModelDeploymentSpec.model_validate(
        {"model": {"compilationJobRef": {"name": "m"}}, "pools": pools, "rollout": rollout})


def resolutions(s: EdgeModelDeploymentSpec, digest: str = D1) -> list[Any]:
    found = candidates_from_compilation(
        cj({"avx512": ("x86_64-avx512", digest), "base": ("x86_64", digest),
            "arm": ("aarch64", digest)}), placements())
    return resolve(s.pools, list(NODES.values()), found, placements())


def test_each_pool_gets_the_most_specific_fitting_bundle_or_a_clear_reason() -> None:
    s = spec(pools=[{"name": p, "nodeSelector": {"neofleet.io/pool": p}}
                    for p in ("cpu", "edge", "gpu")])
    chosen = {r.pool: r.candidate.target for r in resolutions(s) if r.candidate}
    assert chosen == {"cpu": "avx512", "edge": "arm", "gpu": "base"}
    only_avx = resolve(s.pools, list(NODES.values()), candidates_from_compilation(
        cj({"avx512": ("x86_64-avx512", D1)}), placements()), placements())
    missing = {r.pool: r for r in only_avx if r.candidate is None}
    assert set(missing) == {"edge", "gpu"}
    assert missing["gpu"].reason == "NoArtifactForPool"
    assert "nvidia-t4" in missing["gpu"].message and "x86_64" in missing["gpu"].message
    assert "aarch64" in missing["edge"].message and "rasp4b" in missing["edge"].message
    nowhere = spec(pools=[{"name": "x", "nodeSelector": {"neofleet.io/pool": "none"}}])
    assert resolutions(nowhere)[0].reason == "NoNodesInPool"


class Sim:
    """Applies each plan to a world where workloads become ready at once."""

    def __init__(self, s: EdgeModelDeploymentSpec) -> None:
        self.spec, self.status, self.workloads = s, None, {}
        self.clock, self.annotations, self.events = 0, {}, []
        self.measure_ok: bool | None = True        # None: Prometheus has no data yet

    def now(self) -> str:
        return f"2026-12-01T10:{self.clock // 60:02d}:{self.clock % 60:02d}Z"

    def step(self, digest: str = D1, seconds: int = 5) -> DeploymentPlan:
        self.clock += seconds
        measurements = []
        if analysis_due(self.spec, self.status, self.now()):
            value = {True: 0.01, False: 9.0, None: None}[self.measure_ok]
            measurements = [Measurement(time=self.now(), metric="p99-latency", value=value,
                                        limit=0.1, ok=bool(self.measure_ok),
                                        inconclusive=self.measure_ok is None)]
        nodes = {"cpu": ["cpu-1", "cpu-2"], "edge": ["arm-1", "arm-2"]}
        world = World(resolutions(self.spec, digest), nodes, list(self.workloads.values()),
                      dict(self.annotations), self.now(), measurements)
        plan = plan_deployment("m", 1, self.spec, self.status, world)
        for gone in plan.delete:
            self.workloads.pop(gone.name, None)
        for want in plan.apply:
            size = (want.replicas if want.kind == "Deployment" else
                    0 if want.parked else len(want.nodes or nodes[want.pool.name]))
            self.workloads[want.name] = ObservedWorkload(want.name, want.kind, want.pool.name,
                                                         want.revision, size, size)
        self.status = plan.status.wire()
        self.events += [reason for _, reason, _ in plan.events]
        assert {c["reason"] for c in self.status.get("conditions", [])} <= set(REASONS)
        return plan

    def sizes(self) -> dict[tuple[str, str], int]:
        return {(w.pool, w.revision): w.ready for w in self.workloads.values()}


def test_first_revision_then_a_canary_walks_its_steps_and_promotes() -> None:
    sim = Sim(spec(strategy="Canary", poolOrder="Parallel", steps=[
        {"setWeight": 25}, {"pause": {"duration": "10s"}}, {"setWeight": 50},
        {"analysis": {"interval": "5s", "count": 2}}]))
    sim.step()
    sim.step()
    stable = sim.status["stableRevision"]
    assert sim.status["phase"] == "Healthy" and "Deployed" in sim.events
    sim.step(D2)                       # new digest: a new revision starts at weight 25
    canary = sim.status["canaryRevision"]
    assert canary and canary != stable and "RolloutStarted" in sim.events
    assert sim.sizes()[("cpu", canary)] == 1 and sim.sizes()[("cpu", stable)] == 3
    assert sim.sizes()[("edge", canary)] == 1 and sim.sizes()[("edge", stable)] == 2
    for _ in range(12):
        sim.step(D2)
        if sim.status.get("stableRevision") == canary:
            break
    assert sim.status["stableRevision"] == canary and sim.status["phase"] == "Healthy"
    assert "RolloutCompleted" in sim.events
    assert set(sim.sizes()) == {("cpu", canary), ("edge", canary)}
    assert sim.sizes()[("cpu", canary)] == 4 and sim.sizes()[("edge", canary)] == 2


def test_a_failed_analysis_rolls_every_pool_back_and_is_not_retried() -> None:
    sim = Sim(spec(strategy="Canary", steps=[
        {"setWeight": 50}, {"analysis": {"interval": "5s", "count": 3, "failureLimit": 1}}]))
    sim.step()
    sim.step()
    stable = sim.status["stableRevision"]
    sim.measure_ok = False
    for _ in range(8):
        sim.step(D2)
    assert sim.status["phase"] == "RolledBack" and "RolledBack" in sim.events
    assert set(sim.sizes()) == {("cpu", stable), ("edge", stable)}
    assert sim.sizes()[("cpu", stable)] == 4
    assert "p99-latency=9.0" in sim.status["message"]
    degraded = next(c for c in sim.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolledBack"
    sim.step(D2)                                   # the same revision is not tried again
    assert sim.status["phase"] == "RolledBack" and sim.status.get("canaryRevision") is None


def test_no_data_is_inconclusive_until_the_limit_then_it_fails() -> None:
    steps = [{"setWeight": 50}, {"analysis": {"interval": "5s", "count": 2, "failureLimit": 0,
                                              "inconclusiveLimit": 2}}]
    sim = Sim(spec(strategy="Canary", poolOrder="Parallel", steps=steps))
    sim.step()
    sim.step()
    sim.measure_ok = None                        # the canary not scraped yet: two rounds
    for _ in range(6):
        sim.step(D2)
        if sim.status.get("rollout", {}).get("inconclusive") == 2:
            break
    assert sim.status["phase"] != "RolledBack" and sim.status["rollout"]["inconclusive"] == 2
    sim.measure_ok = True                        # then data comes and passes
    for _ in range(6):
        sim.step(D2)
    assert sim.status["phase"] == "Healthy" and "RolloutCompleted" in sim.events

    never = Sim(spec(strategy="Canary", poolOrder="Parallel", steps=steps))
    never.step()
    never.step()
    never.measure_ok = None                      # a canary that is never scraped proves nothing
    for _ in range(6):
        never.step(D2)
    assert never.status["phase"] == "RolledBack"
    assert "p99-latency=no data" in never.status["message"]


def test_sequential_pools_pause_until_promoted_and_abort_rolls_back() -> None:
    sim = Sim(spec(strategy="Canary", steps=[{"setWeight": 50}, {"pause": {}}]))
    sim.step()
    sim.step()
    stable = sim.status["stableRevision"]
    for _ in range(3):
        sim.step(D2)
    canary = sim.status["canaryRevision"]
    assert sim.status["phase"] == "Paused" and "neofleet.io/promote" in sim.status["message"]
    assert ("edge", canary) not in sim.sizes()          # the second pool has not started
    sim.annotations["neofleet.io/promote"] = "1"
    for _ in range(4):
        sim.step(D2)
    assert sim.sizes()[("cpu", canary)] == 4 and sim.sizes()[("cpu", stable)] == 0
    assert sim.sizes()[("edge", canary)] == 1           # second pool at its first step
    sim.annotations["neofleet.io/abort"] = "now"
    sim.step(D2)
    assert sim.status["phase"] == "RolledBack" and "aborted" in sim.status["message"]
    assert sim.sizes() == {("cpu", stable): 4, ("edge", stable): 2}


def test_analysis_queries_and_limits() -> None:
    s = spec(strategy="Canary", steps=[{"analysis": {}}])
    (p99, errors) = queries(s.rollout.steps[0].analysis, "m", "c1", "s1")
    assert 'revision="c1"' in p99.canary and 'revision="s1"' in (p99.stable or "")
    assert errors.stable is None and errors.threshold == 0.01
    assert evaluate(p99, 0.004, 0.001, "t").ok            # 2x, but within the 5 ms slack
    assert not evaluate(p99, 0.030, 0.010, "t").ok
    assert not evaluate(errors, None, None, "t").ok        # no data proves nothing
    assert evaluate(errors, None, None, "t").inconclusive
    assert evaluate(Query("x", "q", None, 1.0, None), 0.5, None, "t").limit == 1.0
    assert parse_duration("1m30s") == 90 and parse_duration("250ms") == 0.25


def test_a_canary_whose_pods_never_get_ready_is_rolled_back_at_the_deadline() -> None:
    sim = Sim(spec(strategy="Canary", progressDeadlineSeconds=30, steps=[{"setWeight": 50}]))
    sim.step()
    sim.step()
    stable = sim.status["stableRevision"]
    sim.step(D2)
    canary = sim.status["canaryRevision"]
    for _ in range(8):                          # the canary's pods crash: never ready
        for name, w in list(sim.workloads.items()):
            if w.revision == canary:
                sim.workloads[name] = ObservedWorkload(name, w.kind, w.pool, w.revision,
                                                       w.desired, 0)
        sim.step(D2)
    assert sim.status["phase"] == "RolledBack" and "not ready within 30 s" in \
        sim.status["message"]
    assert set(sim.sizes()) == {("cpu", stable), ("edge", stable)}


def test_runtime_pods_are_restricted_and_labelled_for_metrics() -> None:
    from neofleet.operator.planning.rollout import DesiredWorkload
    from neofleet.operator.render.runtime import pod_monitor, scale_patch, workload

    s = spec()
    (cpu, edge) = resolutions(s)
    owner = {"apiVersion": "neofleet.io/v1alpha1",
             "metadata": {"name": "m", "namespace": "ns", "uid": "u"}}
    canary = DesiredWorkload("m-edge-r2", "DaemonSet", s.pools[1], "r2",
                             nodes=("arm-1",), artifact=edge)
    ds = workload(canary, owner, s.runtime)
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["arm-1"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    args = container["args"]
    assert args[:2] == ["serve", edge.candidate.uri] and "@sha256:" in args[1]
    assert args[args.index("--revision") + 1] == "r2" and args[args.index("--pool") + 1] == "edge"
    assert float(args[args.index("--shutdown-delay-seconds") + 1]) == 3.0
    assert pod["terminationGracePeriodSeconds"] > 3 + 10
    park = scale_patch(DesiredWorkload("m-edge-r1", "DaemonSet", s.pools[1], "r1",
                                       parked=True))
    assert park["spec"]["template"]["spec"]["nodeSelector"] == {"neofleet.io/parked": "true"}
    assert pod_monitor(owner)["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    assert cpu.candidate.target == "avx512"


def test_a_bundle_not_verified_on_hardware_runs_on_one_pod_first() -> None:
    s = spec(pools=[{"name": "cpu", "nodeSelector": {"neofleet.io/pool": "cpu"},
                     "replicas": 4},
                    {"name": "edge", "nodeSelector": {"neofleet.io/pool": "edge"},
                     "mode": "DaemonSet"}])
    doc = cj({"avx512": ("x86_64-avx512", D1), "arm": ("aarch64", D1)})
    for row in doc["status"]["targets"]:
        row["hardwareVerified"] = False
    found = resolve(s.pools, list(NODES.values()),
                    candidates_from_compilation(doc, placements()), placements())
    nodes = {"cpu": ["cpu-1", "cpu-2"], "edge": ["arm-1", "arm-2"]}
    world = World(found, nodes, [], {}, "2026-12-01T10:00:00Z")
    first = plan_deployment("m", 1, s, None, world)
    sizes = {d.pool.name: (d.replicas, d.nodes) for d in first.apply}
    assert sizes == {"cpu": (1, None), "edge": (None, ("arm-1",))}
    progressing = next(c for c in first.status.conditions if c.type == "Progressing")
    assert progressing.reason == "VerifyingOnHardware"
    ready = [ObservedWorkload(d.name, d.kind, d.pool.name, d.revision, 1, 1)
             for d in first.apply]
    second = plan_deployment("m", 1, s, first.status.wire(),
                             World(found, nodes, ready, {}, "2026-12-01T10:00:05Z"))
    assert {d.pool.name: (d.replicas, d.nodes) for d in second.apply} == {
        "cpu": (4, None), "edge": (None, None)}


def test_the_crd_states_the_default_analysis_the_planner_applies() -> None:
    """The CRD's description of the default metrics is written from the constants the
    planner measures with; check both the text and the behaviour at the stated limits."""
    import re

    import yaml

    from neofleet.api.edgemodeldeployment import (
        DEFAULT_ERROR_RATIO,
        DEFAULT_P99_FACTOR,
        DEFAULT_P99_SLACK_S,
    )

    repo = Path(__file__).resolve().parents[2]
    crd = yaml.safe_load((repo / "crds" / "edgemodeldeployments.neofleet.io.yaml").read_text())

    def descriptions(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["description"]] if isinstance(node.get("description"), str) else []
            return own + [d for v in node.values() for d in descriptions(v)]
        return [d for v in node for d in descriptions(v)] if isinstance(node, list) else []

    said = [m.groups() for d in descriptions(crd) for m in [re.search(
        r"p99-latency \(fails above ([0-9.]+)x the stable revision's p99, never below the "
        r"stable's \+ ([0-9.]+) ms\) and error-ratio \(fails above ([0-9.]+)%\)", d)] if m]
    assert said, "the CRD no longer describes the default metrics"
    for factor, slack_ms, ratio_pct in said:
        assert float(factor) == DEFAULT_P99_FACTOR
        assert float(slack_ms) / 1000 == DEFAULT_P99_SLACK_S
        assert float(ratio_pct) / 100 == DEFAULT_ERROR_RATIO
    s = spec(strategy="Canary", steps=[{"analysis": {}}])
    (p99, errors) = queries(s.rollout.steps[0].analysis, "m", "c1", "s1")
    stable = 0.100                                       # well above the slack
    assert evaluate(p99, stable * DEFAULT_P99_FACTOR, stable, "t").ok
    assert not evaluate(p99, stable * DEFAULT_P99_FACTOR * 1.01, stable, "t").ok
    assert evaluate(p99, DEFAULT_P99_SLACK_S, 0.0001, "t").ok       # the slack floor
    assert evaluate(errors, DEFAULT_ERROR_RATIO, None, "t").ok
    assert not evaluate(errors, DEFAULT_ERROR_RATIO * 1.01, None, "t").ok
