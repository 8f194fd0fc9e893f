"""kubectl conventions on the sandbox's real API server: our short names are ours alone
(`kubectl get cj` once listed CronJobs), `kubectl get cjob|emd|neofleet` list our objects
without a warning, and the README's CRD install command is the one the e2e tier uses
(``crds_installed``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from neofleet.api.crd import BUILTIN_SHORT_NAMES, SHORT_NAMES
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.integration


def _raw(path: str, kubeconfig: Path) -> Any:
    done = subprocess.run(["kubectl", "get", "--raw", path], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _discovered_short_names(kubeconfig: Path) -> dict[str, set[str]]:
    """short name -> the group/resources that claim it, from the API's discovery."""
    groups = _raw("/apis", kubeconfig)
    paths = ["/api/v1"] + [f"/apis/{v['groupVersion']}" for g in groups["groups"]
                           for v in g["versions"]]
    found: dict[str, set[str]] = {}
    for path in paths:
        group = path.removeprefix("/apis/").removeprefix("/api/").split("/")[0]
        for resource in _raw(path, kubeconfig).get("resources", []):
            for short in resource.get("shortNames") or []:
                found.setdefault(short, set()).add(f"{group}/{resource['name']}")
    return found


def test_our_short_names_are_ours_alone_on_a_real_api_server(
        crds_installed: None, sandbox_cluster: Any) -> None:
    found = _discovered_short_names(sandbox_cluster.kubeconfig)
    for kind, short in SHORT_NAMES.items():
        plural = {"CompilationJob": "compilationjobs",
                  "EdgeModelDeployment": "edgemodeldeployments"}[kind]
        assert found.get(short) == {f"neofleet.io/{plural}"}, (short, found.get(short))
    builtin = {s for s, owners in found.items()
               if not any(o.startswith(("neofleet.io/", "monitoring.coreos.com/"))
                          for o in owners)}
    assert builtin <= BUILTIN_SHORT_NAMES, builtin - BUILTIN_SHORT_NAMES
    assert "cj" in builtin                         # CronJob's, as the issue found


def test_kubectl_get_by_short_name_lists_ours_without_a_warning(
        kube_api: Any, crds_installed: None, namespace: str, sandbox_cluster: Any) -> None:
    from kubernetes import client

    from neofleet.api import GROUP, VERSION

    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "compilationjobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompilationJob",
        "metadata": {"name": "listed"},
        "spec": {"model": {"uri": "file:///m.onnx", "framework": "onnx"},
                 "targets": [{"name": "cpu", "device": "x86_64"}],
                 "output": {"repository": "oci://127.0.0.1:1/x"}}})
    env = {**os.environ, "KUBECONFIG": str(sandbox_cluster.kubeconfig)}
    for what in (SHORT_NAMES["CompilationJob"], "neofleet", "cjob,emd"):
        done = subprocess.run(["kubectl", "get", what, "-n", namespace], capture_output=True,
                              text=True, timeout=60, env=env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
        assert "listed" in done.stdout and "PHASE" in done.stdout, done.stdout
        assert "short name" not in done.stderr and "No resources" not in done.stderr, \
            done.stderr
