"""The whole story on one machine (``neofleet sandbox demo``, run by scripts/quickstart.sh):

1. the sandbox's real control plane with its simulated pools (cpu-amd64, edge-arm64 whose
   runtime pods run under qemu-aarch64, a T4-labelled GPU pool), a real registry and a
   real Prometheus;
2. the operator installed from the Helm chart's rendered manifests, running under exactly
   the chart's RBAC (as a process with the chart Deployment's args: sandbox pods have no
   in-cluster API access);
3. a CompilationJob for three targets (x86_64-avx512, aarch64, baseline x86_64);
4. an EdgeModelDeployment on the three pools, then a canary of a new revision under live
   traffic, pool after pool, each step and the latency Prometheus measured printed;
5. how to point kubectl at it and where the Grafana dashboard JSON is.

Everything it starts is stopped at the end (``--keep`` waits for Ctrl-C first).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "examples" / "models" / "tiny_cnn.onnx"
CHART = REPO / "charts" / "neofleet"
GROUP, VERSION, NAMESPACE, NAME = "neofleet.io", "v1alpha1", "default", "tiny-cnn"
Say = Callable[[str], None]


def run(folder: Path, keep: bool, say: Say = print, *,
        scrape_pods: bool = True) -> dict[str, Any]:
    """Run the demo; returns what it measured (the e2e test checks it), with
    ``problems``: why the story did not end as it should (empty when it did).

    ``scrape_pods=False`` hides the runtime pods from Prometheus (a broken analysis: the
    canary must then be rolled back and the demo must say so)."""
    folder = folder.resolve()   # every path below goes to another process (Prometheus...)
    started = time.monotonic()
    with ExitStack() as stack:
        env = stack.enter_context(_environment(folder, say, scrape_pods))
        _compile(env, say)
        _deploy(env, say)
        result = _canary(env, say)
        _tell(env, say)
        if keep:
            say("running; Ctrl-C stops everything")
            _wait_for_interrupt()
    result["total_s"] = round(time.monotonic() - started, 1)
    say(f"done in {result['total_s']} s; everything stopped")
    return result


def failure(result: dict[str, Any]) -> str | None:
    """Why the demo failed, in one line, or None when the story ended as it should."""
    problems = result.get("problems") or []
    return "; ".join(problems) if problems else None


class Env:
    def __init__(self, api: Any, sandbox: Any, registry: Any, prometheus: Any) -> None:
        from kubernetes import client

        self.api, self.sandbox, self.registry, self.prometheus = api, sandbox, registry, prometheus
        self.custom = client.CustomObjectsApi(api)


@contextmanager
def _environment(folder: Path, say: Say, scrape_pods: bool) -> Iterator[Env]:
    from kubernetes import config

    from neofleet.sandbox import cluster
    from neofleet.sandbox.addons.discovery import PodTargets
    from neofleet.sandbox.addons.prometheus import PrometheusServer
    from neofleet.sandbox.addons.registry import RegistryServer

    t0 = time.monotonic()
    sandbox = cluster.up(folder)
    try:
        say(f"[1/6] control plane up in {time.monotonic() - t0:.0f} s: pools cpu-amd64 x2, "
            "edge-arm64 x2 (runtime under qemu-aarch64), gpu-t4 x1 (labels only)")
        api = config.new_client_from_config(str(sandbox.kubeconfig))
        with RegistryServer() as registry, \
                PodTargets(api, NAMESPACE, "app.kubernetes.io/name=neofleet-runtime",
                           folder / "prometheus" / "runtime-pods.json") as targets, \
                PrometheusServer([], file_sd=[targets.path] if scrape_pods else []
                                 ) as prometheus:
            say(f"      registry {registry.host}, Prometheus {prometheus.url}")
            env = Env(api, sandbox, registry, prometheus)
            with _operator(env, folder, say):
                yield env
    finally:
        cluster.down(folder)


@contextmanager
def _operator(env: Env, folder: Path, say: Say) -> Iterator[None]:
    import yaml

    from neofleet.sandbox import processes
    from neofleet.sandbox.kube import apply_all, wait_established

    try:
        import helm_python
    except ImportError as exc:
        raise SystemExit("the demo renders the chart with helm-python-sdk: "
                         "pip install -e '.[dev]'") from exc
    chart = helm_python.Chart.load(CHART)
    values = {"images": {"compiler": {"repository": "neofleet-compiler", "tag": "demo"}},
              "operator": {"prometheusUrl": env.prometheus.url}}
    rendered = chart.render(values, name="neofleet", namespace="neofleet-system",
                            is_install=True)
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    crds = [d for c in chart.crds for d in yaml.safe_load_all(c["data"]) if d]
    apply_all(env.api, crds)
    wait_established(env.api, crds)
    apply_all(env.api, [d for d in docs if d["kind"] != "Deployment"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    metrics, liveness = processes.free_ports(2)
    for flag, value in (("--metrics-port", str(metrics)), ("--metrics-host", "127.0.0.1"),
                        ("--liveness", f"http://127.0.0.1:{liveness}/healthz")):
        args[args.index(flag) + 1] = value
    log = folder / "operator.log"
    process_env = {**os.environ, "KUBECONFIG": str(env.sandbox.operator_kubeconfig)}
    operator = processes.start([sys.executable, "-m", "neofleet.cli", *args], log,
                               process_env)
    say(f"[2/6] chart installed ({len(docs)} objects); operator running under the chart's "
        f"RBAC, metrics on 127.0.0.1:{metrics}, log {log}")
    try:
        yield
    finally:
        processes.stop_child(operator)


def _compile(env: Env, say: Say) -> None:
    sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    t0 = time.monotonic()
    env.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "compilationjobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
        "metadata": {"name": NAME},
        "spec": {"model": {"uri": f"file://{MODEL}", "framework": "onnx", "sha256": sha},
                 "targets": [{"name": "avx512", "device": "x86_64-avx512"},
                             {"name": "arm", "device": "aarch64"},
                             {"name": "base", "device": "x86_64"}],
                 "output": {"repository": f"oci://{env.registry.host}/demo/tiny-cnn"},
                 "verify": {"samples": 2}}})
    status = _wait(lambda: _status(env, "compilationjobs").get("phase") in
                   ("Succeeded", "Failed", "PartiallySucceeded"), "the CompilationJob", 900,
                   lambda: _status(env, "compilationjobs"))
    say(f"[3/6] CompilationJob {status['phase']} in {time.monotonic() - t0:.0f} s:")
    for row in status.get("targets", []):
        digest = (row.get("artifact") or {}).get("digest", "")[:19]
        bench = row.get("benchmarkMs")
        timing = f"{bench:.3f} ms" if isinstance(bench, float) else "not timed (emulated)"
        say(f"      {row['name']:<7} {row['phase']:<9} backend={row.get('backend', '-'):<11} "
            f"{timing:<21} {digest}  {row.get('reason') or ''}")
    if status["phase"] != "Succeeded":
        raise SystemExit(f"the CompilationJob failed: {status.get('conditions')}")


POOLS: list[dict[str, Any]] = [
         {"name": "cpu", "replicas": 2, "nodeSelector": {"neofleet.io/pool": "cpu-amd64"}},
         {"name": "edge", "mode": "DaemonSet",
          "nodeSelector": {"neofleet.io/pool": "edge-arm64"}},
         {"name": "gpu", "replicas": 1, "nodeSelector": {"neofleet.io/pool": "gpu-t4"},
          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                           "effect": "NoSchedule"}]}]


def _spec(threads: int) -> dict[str, Any]:
    analysis = {"interval": "3s", "count": 2, "failureLimit": 0, "window": "20s",
                "metrics": [{"name": "p99-latency", "threshold": 1.0},
                            {"name": "error-ratio", "threshold": 0.01}]}
    return {"model": {"compilationJobRef": {"name": NAME}}, "pools": POOLS,
            "runtime": {"image": "neofleet-runtime:demo", "threads": threads,
                        "shutdownDelaySeconds": 2},
            "rollout": {"strategy": "Canary", "poolOrder": "Sequential", "steps": [
                {"setWeight": 50}, {"analysis": analysis}, {"setWeight": 100}]}}


def _deploy(env: Env, say: Say) -> None:
    t0 = time.monotonic()
    env.custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "edgemodeldeployments",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModelDeployment",
         "metadata": {"name": NAME}, "spec": _spec(threads=1)})
    status = _wait(lambda: _status(env).get("phase") == "Healthy",
                   "the first revision", 300, lambda: _status(env))
    say(f"[4/6] EdgeModelDeployment Healthy in {time.monotonic() - t0:.0f} s, revision "
        f"{status['stableRevision']}:")
    for pool in status["pools"]:
        say(f"      pool {pool['name']:<5} -> target {pool['target']:<7} "
            f"{pool['artifactDigest'][:19]}  ready {pool['stableReady']}/{pool['desired']}")


def _canary(env: Env, say: Say) -> dict[str, Any]:
    from neofleet.sandbox.addons.traffic import TrafficDriver

    body = {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                        "data": [0.1] * (3 * 32 * 32)}]}
    stable = _status(env)["stableRevision"]
    with TrafficDriver(env.api, NAMESPACE, f"neofleet.io/edgemodeldeployment={NAME}", NAME,
                       body, pause_s=0.05) as traffic:
        _wait(lambda: traffic.results, "traffic", 60, lambda: traffic.summary())
        t0 = time.monotonic()
        env.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                  "edgemodeldeployments", NAME,
                                                  {"spec": {"runtime": {"threads": 2}}})
        say("[5/6] canary of revision 2 (runtime threads 1 -> 2) under live traffic, pool "
            "after pool: setWeight 50 -> analysis (p99, error ratio) -> 100")
        steps = _StepReport(env, stable, t0, say)
        while True:
            status = _status(env)
            steps.see(status)
            if status.get("stableRevision") not in (None, stable) or \
                    status.get("phase") in ("RolledBack", "Degraded"):
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"the canary did not finish: {status.get('message')}")
            time.sleep(1)
        steps.finish()
        elapsed = time.monotonic() - t0
    failed = len(traffic.failures())
    say(f"      {status['phase']} after {elapsed:.0f} s: {len(traffic.results)} requests, "
        f"{failed} failed; answered by revision {traffic.by_revision()}")
    problems = list(steps.problems)
    if status["phase"] != "Healthy":
        problems.insert(0, f"the canary ended {status['phase']}: {status.get('message')}")
        say(f"      why: {status.get('message')}")
    if failed:
        problems.append(f"{failed} of {len(traffic.results)} requests failed")
    return {"phase": status["phase"], "stable": status.get("stableRevision"),
            "requests": len(traffic.results), "failed": failed, "rollout_s": round(elapsed, 1),
            "analysis_p99_ms": steps.analysis_p99, "problems": problems}


ANALYSIS_STEP = next(i for i, step in enumerate(_spec(1)["rollout"]["steps"])
                     if "analysis" in step)


class _StepReport:
    """Prints each pool's steps as the operator takes them, with the p99 Prometheus measured
    for both revisions. A pool's analysis step is printed once Prometheus has both p99s;
    when the step ends without them it is printed with "-" and counted as a problem: the
    analysis had nothing to judge."""

    def __init__(self, env: Env, stable: str, t0: float, say: Say) -> None:
        self.env, self.stable, self.t0, self.say = env, stable, t0, say
        self.seen: set[tuple[Any, ...]] = set()
        self.waiting: tuple[str, str] | None = None       # (pool, canary) in analysis
        self.analysis_p99: dict[str, dict[str, str]] = {}
        self.problems: list[str] = []

    def see(self, status: dict[str, Any]) -> None:
        rollout = status.get("rollout") or {}
        canary, phase = status.get("canaryRevision"), status.get("phase")
        pool = POOLS[min(int(rollout.get("poolIndex") or 0), len(POOLS) - 1)]["name"]
        step = status.get("currentStep")
        if self.waiting and (self.waiting != (pool, canary) or step != ANALYSIS_STEP):
            self._analysis_ended()
        if not canary:
            return
        if self.waiting:
            self._print(pool, step, phase, canary)
        elif (pool, step, phase) not in self.seen:
            self.seen.add((pool, step, phase))
            if step == ANALYSIS_STEP and phase == "Progressing":
                self.waiting = (pool, canary)
            self._print(pool, step, phase, canary)

    def finish(self) -> None:
        if self.waiting:
            self._analysis_ended()

    def _print(self, pool: str, step: Any, phase: Any, canary: str,
               last_chance: bool = False) -> None:
        p99 = {rev: _p99(self.env, rev) for rev in (self.stable, canary)}
        if self.waiting == (pool, canary):
            if "-" in p99.values() and not last_chance:
                return                                   # not scraped yet: ask again
            self.analysis_p99[pool] = {"stable": p99[self.stable], "canary": p99[canary]}
            self.waiting = None
        self.say(f"      t={time.monotonic() - self.t0:5.1f}s pool {pool:<5} step {step} "
                 f"{phase:<11} p99 stable {p99[self.stable]} ms, canary {p99[canary]} ms")

    def _analysis_ended(self) -> None:
        pool, canary = self.waiting or ("?", "?")
        self._print(pool, ANALYSIS_STEP, "Progressing", canary, last_chance=True)
        if "-" in self.analysis_p99.get(pool, {"": "-"}).values():
            self.problems.append(f"pool {pool}: no data: Prometheus had no p99 for both "
                                 "revisions during the pool's analysis step")


def _p99(env: Env, revision: str) -> str:
    result = env.prometheus.query(
        'histogram_quantile(0.99, sum by (le) (rate(neofleet_inference_request_duration_'
        f'seconds_bucket{{model="{NAME}",revision="{revision}"}}[30s])))')
    try:
        return f"{float(result[0]['value'][1]) * 1000:.1f}"
    except (IndexError, ValueError):
        return "-"


def _tell(env: Env, say: Say) -> None:
    say("[6/6] look around:")
    say(f"      export KUBECONFIG={env.sandbox.kubeconfig}")
    say("      kubectl get cjob,emd,deploy,ds,pods -o wide")
    say(f"      Prometheus: {env.prometheus.url}  (runtime pods via file_sd)")
    say(f"      Grafana dashboard JSON: {CHART / 'files' / 'grafana-dashboard.json'} "
        "(import it in your Grafana with this Prometheus as the data source)")


def _status(env: Env, plural: str = "edgemodeldeployments") -> dict[str, Any]:
    obj = env.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, NAME)
    return dict(obj.get("status") or {})


def _wait(check: Callable[[], Any], what: str, timeout_s: float,
          detail: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return detail()
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}: {detail()}")


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
