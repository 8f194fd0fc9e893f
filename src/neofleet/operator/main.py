"""``neofleet operator``: kopf with the project's settings.

Namespaces or cluster-wide, a liveness endpoint, the operator's own metrics on their own
port, no peering unless asked (the chart runs one replica with ``--peering``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import kopf

from neofleet.operator.deploy import DeploymentReconciler
from neofleet.operator.kube import Kube
from neofleet.operator.metrics import OperatorMetrics
from neofleet.operator.planning.compilation import Settings
from neofleet.operator.reconcile import Reconciler, placements

DEFAULT_COMPILER_IMAGE = "ghcr.io/neofleet/neofleet-compiler:0.1.0"
RESYNC_PERIOD_S = 60.0


def run(namespaces: Sequence[str], compiler_image: str, liveness: str | None,
        metrics_port: int | None, metrics_host: str, peering: str | None,
        prometheus_url: str | None = None) -> None:
    from kubernetes import config
    from prometheus_client import start_http_server

    try:
        api = config.new_client_from_config()
    except config.ConfigException:
        config.load_incluster_config()
        from kubernetes import client

        api = client.ApiClient()
    metrics = OperatorMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
    reconciler = Reconciler(Kube(api), Settings(compiler_image=compiler_image), metrics,
                            placements())
    deployments = DeploymentReconciler(Kube(api), metrics, placements(), prometheus_url)
    registry = kopf.OperatorRegistry()
    from neofleet.operator.handlers import register

    register(registry, reconciler, deployments)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # $KUBECONFIG or the in-cluster ServiceAccount, through the official client
        return kopf.login_via_client(**kwargs)

    stop_resync = threading.Event()

    @kopf.on.startup(registry=registry)
    def start_resync(**_: object) -> None:
        threading.Thread(target=reconciler.resync_forever, name="resync", daemon=True,
                         args=(list(namespaces), RESYNC_PERIOD_S, stop_resync,
                               deployments.resync)).start()

    @kopf.on.cleanup(registry=registry)
    def stop(**_: object) -> None:
        stop_resync.set()
        deployments.stop()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 60
        settings.persistence.finalizer = "neofleet.io/operator"

    debug = bool(os.environ.get("NEOFLEET_OPERATOR_DEBUG"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)   # one line per event
    asyncio.run(kopf.operator(
        registry=registry, clusterwide=not namespaces, namespaces=list(namespaces),
        standalone=peering is None, peering_name=peering,
        liveness_endpoint=liveness))
