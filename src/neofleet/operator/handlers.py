"""Thin kopf registrations: every event that may change a plan calls a reconcile. Event
handlers only (level-triggered, nothing stored on the objects by kopf): CompilationJobs
and the Jobs and pods labelled with one; EdgeModelDeployments, the Deployments and
DaemonSets labelled with one, and the CompilationJobs they take artifacts from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from neofleet.api import GROUP, VERSION
from neofleet.operator.deploy import DeploymentReconciler
from neofleet.operator.reconcile import Reconciler
from neofleet.operator.render.job import CJ_LABEL
from neofleet.operator.render.runtime import EMD_LABEL


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler,
             deployments: DeploymentReconciler) -> None:
    @kopf.on.event(GROUP, VERSION, "compilationjobs", registry=registry)
    def compilation_job(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type != "DELETED" and namespace:
            reconciler.reconcile(namespace, name)
            deployments.reconcile_for_compilation(namespace, name)

    @kopf.on.event(GROUP, VERSION, "edgemodeldeployments", registry=registry)
    def edge_deployment(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type != "DELETED" and namespace:
            deployments.reconcile(namespace, name)

    for kind in ("deployments", "daemonsets"):
        @kopf.on.event("apps", "v1", kind, labels={EMD_LABEL: kopf.PRESENT},
                       registry=registry, id=f"runtime-{kind}")
        def runtime_workload(*, labels: Mapping[str, str], namespace: str | None,
                             **_: Any) -> None:
            if namespace:
                deployments.reconcile(namespace, labels[EMD_LABEL])

    @kopf.on.event("batch", "v1", "jobs", labels={CJ_LABEL: kopf.PRESENT}, registry=registry)
    def compile_job(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace:
            reconciler.reconcile(namespace, labels[CJ_LABEL])

    @kopf.on.event("", "v1", "pods", labels={CJ_LABEL: kopf.PRESENT}, registry=registry)
    def compile_pod(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace:
            reconciler.reconcile(namespace, labels[CJ_LABEL])
