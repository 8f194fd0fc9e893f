"""The model behind the routes: loading, warm-up, admission, worker threads, batching.

``InferenceService.start`` loads the model in a background thread while the server
already answers liveness and metrics; it is ready once the load and one warm-up run on
zero inputs are done. A load that fails calls ``on_fatal`` (the server then exits
non-zero with the reason). ``run`` executes ``model.run`` in a bounded thread pool
(``DLRModel.run`` is thread-safe), or through the batcher. ``admitted`` bounds the
requests in flight (``--max-queue``): one more is refused with ``OverloadedError``
instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from neofleet.runtime.errors import NotReadyError, OverloadedError
from neofleet.runtime.server.batcher import Batcher
from neofleet.runtime.server.metrics import ServerMetrics
from neofleet.runtime.server.signature import Signature

log = logging.getLogger(__name__)


class Runnable(Protocol):
    """What the service needs of a model (``DLRModel`` is one)."""

    def run(self, input_values: Any) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ServiceSettings:
    threads: int
    max_queue: int
    batch: int | None = None           # the bundle's batch size, when batching
    batch_timeout_s: float = 0.0
    warmup: tuple[np.ndarray, ...] | None = None   # the bundle's warm-up sample, if any


def zero_inputs(signature: Signature) -> list[np.ndarray]:
    """The warm-up inputs: zeros of each input's full compiled shape (one row where the
    model takes any number)."""
    return [np.zeros(tuple(1 if d == -1 else d for d in m.shape), dtype=m.dtype)
            for m in signature.inputs]


class InferenceService:
    def __init__(self, signature: Signature, settings: ServiceSettings, metrics: ServerMetrics,
                 load: Callable[[], Runnable], on_fatal: Callable[[BaseException], None]) -> None:
        self._signature, self._settings, self._metrics = signature, settings, metrics
        self._load, self._on_fatal = load, on_fatal
        self._model: Runnable | None = None
        self._draining = False
        self._inflight = 0
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: Batcher | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None and not self._draining

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def drain(self) -> None:
        """Shutdown started: readiness turns false; requests in flight still finish."""
        self._draining = True

    async def start(self) -> None:
        settings = self._settings
        self._executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="neofleet-infer")
        if settings.batch is not None:
            self._batcher = Batcher(self._run_model, self._executor, batch=settings.batch,
                                    max_rows=self._signature.max_batch or settings.batch,
                                    timeout_s=settings.batch_timeout_s, slots=settings.threads,
                                    report=self._report_batch)
            self._batcher.start()
        self._load_in_background(asyncio.get_running_loop())

    async def stop(self) -> None:
        self._draining = True
        if self._batcher is not None:
            await self._batcher.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        if self._model is None:
            raise NotReadyError("the model is still loading; retry once /v2/health/ready is 200")
        if self._inflight >= self._settings.max_queue:
            raise OverloadedError(f"overloaded: {self._inflight} requests in flight, the limit "
                                  f"is {self._settings.max_queue} (--max-queue); retry later")
        self._inflight += 1
        self._metrics.inflight(self._inflight)
        try:
            yield
        finally:
            self._inflight -= 1
            self._metrics.inflight(self._inflight)

    async def run(self, inputs: list[np.ndarray], rows: int | None) -> list[np.ndarray]:
        if self._batcher is not None and rows is not None:
            return await self._batcher.submit(inputs, rows)
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        enqueued = time.perf_counter()
        started, outputs = await loop.run_in_executor(self._executor, self._timed_run, inputs)
        self._metrics.queued((started - enqueued,))
        return outputs

    def _timed_run(self, inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        return time.perf_counter(), self._run_model(inputs)

    def _run_model(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        model = self._model
        if model is None:
            raise NotReadyError("the model is not loaded")
        return model.run(inputs)

    def _report_batch(self, rows: int, waits: Sequence[float]) -> None:
        self._metrics.batched(rows)
        self._metrics.queued(waits)

    def _load_in_background(self, loop: asyncio.AbstractEventLoop) -> None:
        def work() -> None:
            try:
                started = time.perf_counter()
                model = self._load()
                seconds = time.perf_counter() - started
                warmup = self._settings.warmup
                model.run(list(warmup) if warmup else zero_inputs(self._signature))
            except BaseException as exc:
                _call_soon(loop, self._failed, exc)
                return
            _call_soon(loop, self._loaded, model, seconds)

        threading.Thread(target=work, name="neofleet-load", daemon=True).start()

    def _loaded(self, model: Runnable, seconds: float) -> None:
        self._metrics.loaded(seconds)
        self._model = model
        log.info("model loaded in %.3f s and warmed up: ready", seconds)

    def _failed(self, exc: BaseException) -> None:
        log.error("loading the model failed: %s", exc)
        self._on_fatal(exc)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None],
               *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped meanwhile
        loop.call_soon_threadsafe(callback, *args)
