"""Crash safety: the operator is SIGKILLed as soon as a watch sees its k-th write (a Job
created or deleted, a status patch) of a CompilationJob's life, then restarted; for every
k up to the number of writes of an undisturbed run, the CompilationJob converges to the
same result with exactly one Job per target ever created."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import processes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "tiny_cnn.onnx"
GROUP, VERSION, PLURAL = "neofleet.io", "v1alpha1", "compilationjobs"


def _watch(list_call: Any, out: queue.Queue[tuple[str, str, str]], kind: str,
           stop: threading.Event, **kwargs: Any) -> None:
    from kubernetes import watch

    stream = watch.Watch()
    try:
        for event in stream.stream(list_call, timeout_seconds=600, **kwargs):
            if stop.is_set():
                stream.stop()
                return
            obj = event["object"]
            name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
            out.put((kind, event["type"], name))
    except Exception:
        if not stop.is_set():   # the stream closing at the end of a run is expected
            raise


def _start_operator(kubeconfig: Path, log: Path) -> Any:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    return processes.start([sys.executable, "-m", "neofleet.cli", "operator",
                            "--compiler-image", "localhost/neofleet-compiler:chaos"], log, env)


def _life(api: Any, namespace: str, name: str, repo: str, kubeconfig: Path, log: Path,
          kill_at: int | None) -> tuple[int, dict[str, Any], int]:
    """Run one CompilationJob; SIGKILL + restart the operator at write ``kill_at``.
    Returns (writes seen, final status, Jobs ever created). (Bundles carry their build
    time, so digests differ between runs; what must match is the outcome.)"""
    from kubernetes import client

    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    seen: queue.Queue[tuple[str, str, str]] = queue.Queue()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_watch, daemon=True, args=(
            batch.list_namespaced_job, seen, "job", stop),
            kwargs={"namespace": namespace, "label_selector":
                    f"neofleet.io/compilationjob={name}"}),
        threading.Thread(target=_watch, daemon=True, args=(
            custom.list_namespaced_custom_object, seen, "cj", stop),
            kwargs={"group": GROUP, "version": VERSION, "namespace": namespace,
                    "plural": PLURAL, "field_selector": f"metadata.name={name}"}),
    ]
    for thread in threads:
        thread.start()
    sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
        "metadata": {"name": name},
        "spec": {"model": {"uri": f"file://{MODEL}", "framework": "onnx", "sha256": sha},
                 "targets": [{"name": "cpu", "device": "x86_64-avx512", "backend": "onnxruntime"}],
                 "output": {"repository": repo}, "verify": {"samples": 1}}})
    operator = _start_operator(kubeconfig, log)
    writes, created, finished = 0, 0, False

    def count(kind: str, kind_of_event: str) -> bool:
        """Count one watch event; True when it is an operator write."""
        nonlocal writes, created
        created += kind == "job" and kind_of_event == "ADDED"
        is_write = (kind, kind_of_event) in (("job", "ADDED"), ("job", "DELETED"),
                                             ("cj", "MODIFIED"))
        writes += is_write
        return is_write

    try:
        while not finished:
            kind, kind_of_event, _ = seen.get(timeout=300)
            if count(kind, kind_of_event) and writes == kill_at:
                os.killpg(operator.pid, signal.SIGKILL)   # no graceful anything
                operator.wait()
                operator = _start_operator(kubeconfig, log)
            status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                         name).get("status") or {}
            finished = status.get("phase") in ("Succeeded", "Failed", "PartiallySucceeded")
        # late writes count too: keep counting until the watches are quiet for 3 s (on
        # state, not a fixed wait: Job status updates keep arriving on a loaded machine)
        quiet_until = time.monotonic() + 120
        while time.monotonic() < quiet_until:
            try:
                count(*seen.get(timeout=3)[:2])
            except queue.Empty:
                break
    finally:
        stop.set()
        processes.stop_child(operator)
    final = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    jobs = batch.list_namespaced_job(namespace, label_selector=f"neofleet.io/compilationjob={name}")
    assert len(jobs.items) == 1
    return writes, dict(final["status"]), created


def test_the_operator_converges_after_being_killed_after_each_write(
        kube_api: Any, namespace: str, registry: Any, sandbox_cluster: Any,
        crds_installed: None, tmp_path: Path) -> None:
    from neofleet.operator.rbac import manifests
    from neofleet.sandbox.kube import apply_all

    apply_all(kube_api, manifests())
    repo = f"oci://127.0.0.1:{registry.port}/models/chaos"
    kubeconfig = sandbox_cluster.operator_kubeconfig
    writes, reference, created = _life(kube_api, namespace, "calm", repo, kubeconfig,
                                       tmp_path / "calm.log", None)
    assert reference["phase"] == "Succeeded" and created == 1
    results = []
    for k in range(1, writes + 1):
        _, status, created = _life(kube_api, namespace, f"kill-{k}", repo, kubeconfig,
                                   tmp_path / f"kill-{k}.log", k)
        row = status["targets"][0]
        converged = (status["phase"] == reference["phase"] and created == 1
                     and row["artifact"]["uri"].endswith("@" + row["artifact"]["digest"])
                     and status["succeeded"] == reference["succeeded"])
        results.append(converged)
    print(f"\nchaos: converged {sum(results)}/{len(results)} runs, one SIGKILL at each of "
          f"the {writes} writes of an undisturbed run")
    assert all(results), results
