"""Thin kopf registrations: every event that may change a CompilationJob's plan calls
``Reconciler.reconcile``. Event handlers only (level-triggered, nothing stored on the
objects by kopf): the CompilationJob itself, and the Jobs and pods labelled with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from neofleet.api import GROUP, VERSION
from neofleet.operator.reconcile import Reconciler
from neofleet.operator.render.job import CJ_LABEL


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    @kopf.on.event(GROUP, VERSION, "compilationjobs", registry=registry)
    def compilation_job(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type != "DELETED" and namespace:
            reconciler.reconcile(namespace, name)

    @kopf.on.event("batch", "v1", "jobs", labels={CJ_LABEL: kopf.PRESENT}, registry=registry)
    def compile_job(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace:
            reconciler.reconcile(namespace, labels[CJ_LABEL])

    @kopf.on.event("", "v1", "pods", labels={CJ_LABEL: kopf.PRESENT}, registry=registry)
    def compile_pod(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace:
            reconciler.reconcile(namespace, labels[CJ_LABEL])
