"""Fleet rollout: roll a new revision across a 20-node simulated DaemonSet pool under
live traffic; report the time to complete and every failed request.

A script, not a test. It brings up a sandbox cluster whose only pool is ``edge-x86``
(``--nodes`` amd64 nodes with AVX2 labels; the node agent runs every runtime pod as a
local process), a real registry with two bundles of the same small model (different
digests), and `neofleet operator` under its RBAC; deploys revision 1 as a DaemonSet (one
`neofleet serve` per node), starts the traffic driver (the test stand-in for kube-proxy:
ready, non-terminating pods, no retries), then changes the artifact and times the
rollout to ``stableRevision`` = revision 2 with every endpoint on it.

    .venv/bin/python benchmarks/fleet_rollout.py [--nodes 20] [--strategy Canary|Rolling]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP, VERSION, PLURAL = "neofleet.io", "v1alpha1", "edgemodeldeployments"
NAME, NAMESPACE = "fleet", "default"


def pools_file(folder: Path, nodes: int) -> Path:
    path = folder / "pools.yaml"
    labels = "\n".join(f'    feature.node.kubernetes.io/cpu-cpuid.{f}: "true"'
                       for f in ("AVX", "AVX2", "FMA3"))
    path.write_text(f"- name: edge-x86\n  nodes: {nodes}\n  arch: amd64\n  labels:\n"
                    f"{labels}\n  capacity: {{cpu: '4', memory: 8Gi}}\n")
    return path


def spec(uri: str, strategy: str) -> dict[str, Any]:
    steps = ([{"setWeight": 10}, {"setWeight": 50}, {"setWeight": 100}]
             if strategy == "Canary" else [])
    return {"model": {"artifacts": [{"target": "x86_64-avx2", "uri": uri}]},
            "pools": [{"name": "edge", "mode": "DaemonSet",
                       "nodeSelector": {"neofleet.io/pool": "edge-x86"}}],
            "runtime": {"image": "neofleet-runtime:bench", "threads": 1,
                        "shutdownDelaySeconds": 2},
            "rollout": {"strategy": strategy, "steps": steps}}


def status(custom: Any) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    return dict(obj.get("status") or {})


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from kubernetes import client, config

    from neofleet.bundle.oci import push_bundle
    from neofleet.operator.rbac import manifests
    from neofleet.sandbox import cluster, processes
    from neofleet.sandbox.kube import apply_all, load_manifests
    from tests.e2e.test_edgemodeldeployment import BODY, linear_onnx
    from tests.support.bundles import make_bundle
    from tests.support.registry import RegistryServer
    from tests.support.sandbox import wait_until as wait
    from tests.support.traffic import TrafficDriver

    folder = tmp / "sandbox"
    sandbox = cluster.up(folder, pools_file(tmp, args.nodes))
    operator = None
    try:
        with RegistryServer() as registry:
            uris = []
            for index, scale in enumerate((1.0, 1.0 + 1e-6)):
                make_bundle(tmp / f"v{index}", artifact_bytes=linear_onnx(scale))
                uris.append(push_bundle(tmp / f"v{index}",
                                        f"oci://{registry.host}/fleet/m:v{index}").uri)
            api = config.new_client_from_config(str(sandbox.kubeconfig))
            for path in sorted((ROOT / "crds").glob("*.yaml")):
                apply_all(api, load_manifests(path))
            apply_all(api, manifests())
            time.sleep(2)
            env = {**os.environ, "KUBECONFIG": str(sandbox.operator_kubeconfig)}
            operator = processes.start([sys.executable, "-m", "neofleet.cli", "operator"],
                                       tmp / "operator.log", env)
            custom = client.CustomObjectsApi(api)
            start = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModelDeployment",
                "metadata": {"name": NAME}, "spec": spec(uris[0], args.strategy)})
            wait(lambda: status(custom).get("phase") == "Healthy", "revision 1", 900)
            first = time.monotonic() - start
            with TrafficDriver(api, NAMESPACE, f"neofleet.io/edgemodeldeployment={NAME}",
                               NAME, BODY, senders=2, pause_s=0.02) as traffic:
                wait(lambda: len(traffic.endpoints()) == args.nodes, "all endpoints", 120)
                old = status(custom)["stableRevision"]
                start = time.monotonic()
                custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME,
                                                      {"spec": spec(uris[1], args.strategy)})
                wait(lambda: status(custom).get("stableRevision") not in (None, old),
                     "revision 2", 1800)
                promoted = time.monotonic() - start
                new = status(custom)["stableRevision"]
                wait(lambda: len(traffic.endpoints()) == args.nodes and
                     {e.revision for e in traffic.endpoints()} == {new},
                     "every endpoint on revision 2", 300)
                settled = time.monotonic() - start
            return {"first": first, "promoted": promoted, "settled": settled,
                    "requests": len(traffic.results), "failed": len(traffic.failures()),
                    "by_revision": traffic.by_revision(), "kinds": traffic.summary()}
    finally:
        if operator is not None:
            processes.stop_child(operator)
        cluster.down(folder)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--strategy", choices=("Canary", "Rolling"), default="Canary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="neofleet-fleet-") as tmp:
        result = run(args, Path(tmp))
    steps = "setWeight 10 → 50 → 100" if args.strategy == "Canary" else "Rolling"
    print(f"# {args.nodes}-node DaemonSet pool, {steps}, sandbox on {os.cpu_count()} CPUs")
    print("| metric | value |\n|---|---|")
    print(f"| revision 1 on every node (from nothing) | {result['first']:.1f} s |")
    print(f"| revision 2 promoted (stableRevision) | {result['promoted']:.1f} s |")
    print(f"| every endpoint on revision 2 | {result['settled']:.1f} s |")
    print(f"| requests during the rollout | {result['requests']} |")
    print(f"| failed requests | {result['failed']} |")
    print(f"| answered by revision | {result['by_revision']} |")
    if result["failed"]:
        print(result["kinds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
