"""``neofleet operator``: kopf with the project's settings.

Namespaces or cluster-wide, a liveness endpoint, the operator's own metrics on their own
port, and leader election on a Lease when asked (``--leader-election-lease``; the chart
always asks): a standby replica waits for the lease with only its liveness endpoint and
metrics up, and a leader that cannot renew stops acting and exits, so two replicas never
both act.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import os
import signal
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kopf

from neofleet.operator.deploy import DeploymentReconciler
from neofleet.operator.kube import Kube
from neofleet.operator.leader import LeaderElector, LeaseConfig
from neofleet.operator.metrics import OperatorMetrics
from neofleet.operator.planning.compilation import Settings
from neofleet.operator.reconcile import Reconciler, placements

DEFAULT_COMPILER_IMAGE = "ghcr.io/neofleet/neofleet-compiler:0.1.0"
RESYNC_PERIOD_S = 60.0


@dataclass(frozen=True)
class Options:
    namespaces: Sequence[str] = ()
    compiler_image: str = DEFAULT_COMPILER_IMAGE
    liveness: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    prometheus_url: str | None = None
    lease: LeaseConfig | None = None


def lease_config(where: str, identity: str | None, duration_s: int) -> LeaseConfig:
    """``NAMESPACE/NAME`` and the replica's identity (made unique with the process id)."""
    namespace, _, name = where.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {where!r}")
    me = f"{identity or socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    return LeaseConfig(namespace, name, me, lease_duration_s=duration_s,
                       renew_deadline_s=duration_s * 2 / 3,
                       retry_period_s=max(1.0, duration_s / 7.5))


def run(options: Options) -> None:
    from kubernetes import config
    from prometheus_client import start_http_server

    try:
        api = config.new_client_from_config()
    except config.ConfigException:
        config.load_incluster_config()
        from kubernetes import client

        api = client.ApiClient()
    _configure_logging()
    metrics = OperatorMetrics()
    if options.metrics_port is not None:
        start_http_server(options.metrics_port, addr=options.metrics_host,
                          registry=metrics.registry)
    stop, lease = threading.Event(), options.lease
    elector = None
    if lease is not None:
        elector = LeaderElector(Kube(api), lease)
        with _standby_liveness(options.liveness):
            _stop_on_signals(stop)
            if not elector.acquire(stop):
                return
        elector.keep(on_lost=stop.set)
    metrics.leader.set(1)
    try:
        _run_kopf(api, options, metrics, stop)
    finally:
        metrics.leader.set(0)
        if elector is not None:
            elector.release()
    if lease is not None and elector is not None and elector.lost.is_set():
        raise SystemExit(f"lost the leader lease {lease.namespace}/{lease.name}; exiting so "
                         "that only the new leader acts")


def _run_kopf(api: Any, options: Options, metrics: OperatorMetrics,
              stop: threading.Event) -> None:
    reconciler = Reconciler(Kube(api), Settings(compiler_image=options.compiler_image),
                            metrics, placements())
    deployments = DeploymentReconciler(Kube(api), metrics, placements(),
                                       options.prometheus_url)
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
                         args=(list(options.namespaces), RESYNC_PERIOD_S, stop_resync,
                               deployments.resync)).start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: object) -> None:
        stop_resync.set()
        deployments.stop()
        stop.set()              # frees the executor thread kopf parks on the stop flag

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 60
        settings.persistence.finalizer = "neofleet.io/operator"

    asyncio.run(kopf.operator(
        registry=registry, clusterwide=not options.namespaces,
        namespaces=list(options.namespaces), standalone=True,
        liveness_endpoint=options.liveness, stop_flag=stop if options.lease else None))


def _configure_logging() -> None:
    debug = bool(os.environ.get("NEOFLEET_OPERATOR_DEBUG"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)   # one line per event


def _stop_on_signals(stop: threading.Event) -> None:
    """While standing by, SIGTERM/SIGINT end the wait (kopf handles them once it runs)."""
    def handle(signum: int, _frame: object) -> None:
        stop.set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


@contextmanager
def _standby_liveness(url: str | None) -> Iterator[None]:
    """Answer the liveness URL while waiting for the lease (kopf serves it once leading)."""
    if url is None:
        yield
        return
    parsed = urllib.parse.urlsplit(url)

    class Alive(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == (parsed.path or "/")
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b'{"standby": true}' if ok else b"")

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer((parsed.hostname or "0.0.0.0",  # noqa: S104
                                              parsed.port or 80), Alive)
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
