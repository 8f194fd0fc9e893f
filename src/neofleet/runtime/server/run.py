"""``neofleet serve``: resolve the bundle, build the app, run uvicorn until SIGTERM.

Before the port opens: the bundle is opened and verified (pulled first for ``oci://``),
a GPU bundle is checked against this host's GPU (``neofleet.runtime.gpu``), the settings
resolved and the batching options checked against it; any failure is a
NeofleetError the CLI prints as one line (exit 1). Then uvicorn (uvloop + httptools)
serves while the model loads in the background; readiness follows the warm-up. A bundle
whose compiled.meta says it was not verified on hardware (a GPU bundle compiled without
its GPU) first runs its verification samples (``neofleet.runtime.samples``). A load or
sample failure stops the server and is raised the same way. SIGTERM or SIGINT: readiness turns
503 at once; the server keeps accepting and serving for ``--shutdown-delay-seconds`` (0 by
default; a second signal ends the wait) so a load balancer can take it out of rotation;
then uvicorn stops accepting, waits up to ``--drain-seconds`` for requests in flight, and
``serve`` returns normally (exit 0).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from types import FrameType

import numpy as np
import uvicorn

from neofleet.bundle import Bundle
from neofleet.errors import NeofleetError
from neofleet.runtime.server.app import ModelInfo, create_app
from neofleet.runtime.server.batching import compiled_batch
from neofleet.runtime.server.metrics import ServerMetrics
from neofleet.runtime.server.service import InferenceService, Runnable, ServiceSettings
from neofleet.runtime.server.settings import BundleFacts, ServeOptions, resolve_settings
from neofleet.runtime.server.signature import Signature, signature_of
from neofleet.runtime.server.source import default_cache_dir, open_source

log = logging.getLogger("neofleet.serve")


def serve(options: ServeOptions, env: Mapping[str, str] | None = None) -> None:
    """Serve until a signal ends it; raise NeofleetError when it cannot start."""
    env = os.environ if env is None else env
    opened = open_source(options.source, options.cache_dir or default_cache_dir(env))
    bundle = opened.bundle
    if bundle.meta.requirements.target_device_type == "gpu":
        from neofleet.runtime.model import check_compatible

        check_compatible(bundle, "gpu", 0)  # no matching GPU: refuse before the port opens
    facts = bundle_facts(bundle)
    settings = resolve_settings(options, env, facts, os.cpu_count() or 1)
    signature = model_signature(bundle, settings.max_batch)
    batch = compiled_batch(signature, settings.max_batch) if settings.max_batch else None
    metrics = ServerMetrics(settings.labels, backend=facts.backend, bundle_digest=facts.digest,
                            max_batch=settings.max_batch)
    fatal: list[BaseException] = []
    server: _Server | None = None

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    service = InferenceService(
        signature, ServiceSettings(settings.threads, settings.max_queue, batch,
                                   settings.batch_timeout_s, _warmup(bundle)),
        metrics, _loader(bundle, settings.num_threads), on_fatal)
    info = ModelInfo(settings.labels.model, settings.version, f"neofleet_{facts.backend}",
                     signature)
    from neofleet import __version__

    app = create_app(info, service, metrics, server_version=__version__,
                     max_body_bytes=settings.max_body_bytes)
    _configure_logging(settings.log_level)
    log.info("serving model %s (revision %s, %s bundle %s for %s, from the %s) on "
             "http://%s:%d, %d threads%s", info.name, info.version, facts.backend,
             facts.digest[:19], facts.target, opened.origin, settings.host, settings.port,
             settings.threads,
             f", batches of up to {settings.max_batch}" if batch else "")
    server = _Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="auto", http="auto",
        lifespan="on", access_log=False, server_header=False, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.drain_seconds,
    ), on_signal=service.drain, delay=ShutdownDelay(settings.shutdown_delay_s))
    _run(server)
    if fatal:
        raise _as_neofleet_error(fatal[0])


def bundle_facts(bundle: Bundle) -> BundleFacts:
    meta = bundle.meta
    return BundleFacts(directory=str(bundle.path), source_filename=meta.neofleet.source.get(
        "filename"), target=meta.requirements.target_device, digest=bundle.digest,
        backend=bundle.manifest.backend)


def model_signature(bundle: Bundle, max_batch: int | None) -> Signature:
    model = bundle.meta.model
    return signature_of([(t.name, t.dtype, t.shape) for t in model.inputs],
                        [(t.name, t.dtype, t.shape) for t in model.outputs], max_batch)


def _warmup(bundle: Bundle) -> tuple[np.ndarray, ...] | None:
    from neofleet.runtime.samples import warmup_inputs

    found = warmup_inputs(bundle)
    return tuple(found) if found is not None else None


def _loader(bundle: Bundle, num_threads: int | None) -> Callable[[], Runnable]:
    def load() -> Runnable:
        from neofleet.runtime.model import DLRModel
        from neofleet.runtime.samples import verify_on_this_host

        model = DLRModel(bundle.path, bundle.meta.requirements.target_device_type,
                         num_threads=num_threads)
        verify_on_this_host(model, bundle)  # a bundle built without its GPU: smoke run first
        return model

    return load


class ShutdownDelay:
    """When uvicorn may begin its shutdown after a signal: ``seconds`` after the first one,
    at once on the second (or on the first, when ``seconds`` is 0)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._until: float | None = None

    def signalled(self) -> bool:
        """A shutdown signal arrived: True when the shutdown should begin now."""
        if self.seconds <= 0 or self._until is not None:
            return True
        self._until = self._clock() + self.seconds
        return False

    @property
    def over(self) -> bool:
        """The delay started by a first signal has passed."""
        return self._until is not None and self._clock() >= self._until


class _Server(uvicorn.Server):
    """uvicorn's server, telling the service as soon as a shutdown signal arrives and
    holding off uvicorn's own shutdown until the delay is over."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None],
                 delay: ShutdownDelay) -> None:
        super().__init__(config)
        self._on_signal, self._delay = on_signal, delay

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal()
        if self._delay.signalled():
            super().handle_exit(sig, frame)
        else:
            log.info("shutdown signal: readiness is 503, still serving for %g s before "
                     "draining (a second signal drains now)", self._delay.seconds)

    async def on_tick(self, counter: int) -> bool:
        if self._delay.over:
            self.should_exit = True
        return await super().on_tick(counter)


def _run(server: _Server) -> None:
    # uvicorn re-raises the signal that stopped it once it is done, into the handler it
    # found: make that a no-op so a drained shutdown exits 0 instead of dying by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    server.run()


def _ignore(sig: int, frame: FrameType | None) -> None:
    del sig, frame


def _configure_logging(level: str) -> None:
    logging.basicConfig(format="neofleet: %(message)s", level=level.upper())


def _as_neofleet_error(exc: BaseException) -> NeofleetError:
    if isinstance(exc, NeofleetError):
        return exc
    error = NeofleetError(f"loading the model failed: {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]}")
    error.reason = "LoadFailed"
    return error
