"""Operator scale: create N CompilationJobs at once and time until all their Jobs exist.

A script, not a test. It brings up a sandbox cluster in a temporary folder (the cached
control plane, ~10 s), installs the CRDs and the operator's RBAC, starts
`neofleet operator` as its ServiceAccount, creates ``--count`` CompilationJobs from 8
client threads, and polls until every one has its Job. The target is ``nvidia-a100``,
which no sandbox node offers, so the compile pods stay Pending and only the control plane
and the operator are measured. Prints: creation time, time until all Jobs exist, time
until every status says WaitingForNode, the operator's CPU seconds (user+system, from
/proc) and RSS (current and peak).

    .venv/bin/python benchmarks/operator_scale.py [--count 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "neofleet.io", "v1alpha1", "compilationjobs"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


def compilation_job(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
            "metadata": {"name": name},
            "spec": {"model": {"uri": "file:///models/m.onnx", "framework": "onnx"},
                     "targets": [{"name": "gpu", "device": "nvidia-a100"}],
                     "output": {"repository": "oci://127.0.0.1:5000/scale/m"}}}


def waiting(custom: Any, namespace: str) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return sum(1 for cj in items if any(
        c.get("reason") == "WaitingForNode"
        for c in (cj.get("status") or {}).get("conditions", [])))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    from kubernetes import client, config

    from neofleet.operator.rbac import manifests
    from neofleet.sandbox import cluster, processes
    from neofleet.sandbox.kube import apply_all, load_manifests

    with tempfile.TemporaryDirectory(prefix="neofleet-scale-") as tmp:
        folder = Path(tmp) / "sandbox"
        sandbox = cluster.up(folder)
        operator = None
        try:
            api = config.new_client_from_config(str(sandbox.kubeconfig))
            for path in sorted((ROOT / "crds").glob("*.yaml")):
                apply_all(api, load_manifests(path))
            apply_all(api, manifests())
            time.sleep(2)   # CRDs established
            env = {**os.environ, "KUBECONFIG": str(sandbox.operator_kubeconfig)}
            operator = processes.start([sys.executable, "-m", "neofleet.cli", "operator"],
                                       Path(tmp) / "operator.log", env)
            time.sleep(3)
            custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
            cpu0 = cpu_seconds(operator.pid)
            start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: custom.create_namespaced_custom_object(
                    GROUP, VERSION, "default", PLURAL, compilation_job(f"scale-{i:04d}")),
                    range(args.count)))
            created = time.monotonic() - start
            while len(batch.list_namespaced_job("default").items) < args.count:
                time.sleep(0.2)
            jobs_exist = time.monotonic() - start
            while waiting(custom, "default") < args.count:
                time.sleep(0.5)
            all_waiting = time.monotonic() - start
            cpu = cpu_seconds(operator.pid) - cpu0
            rss, peak = memory_mb(operator.pid)
        finally:
            if operator is not None:
                processes.stop_child(operator)
            cluster.down(folder)
    print(f"# {args.count} CompilationJobs, 1 target each, sandbox control plane on "
          f"{os.cpu_count()} CPUs")
    print("| metric | value |\n|---|---|")
    print(f"| all CompilationJobs created (8 client threads) | {created:.1f} s |")
    print(f"| all {args.count} Jobs exist | {jobs_exist:.1f} s |")
    print(f"| every status says WaitingForNode | {all_waiting:.1f} s |")
    print(f"| operator CPU (user+system) over that | {cpu:.1f} s |")
    print(f"| operator RSS now / peak | {rss:.0f} / {peak:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
