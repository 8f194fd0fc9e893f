"""The asyncio side of dynamic batching: queue requests, run them together, hand back rows.

One collector task takes a worker slot (one per thread), then the first queued request,
then whatever else arrives within the batch timeout, up to ``max_rows`` rows; a request
that would overflow the batch waits for the next one. The batch is packed, run and split
in a worker thread (``batching.pack``/``split``), so the event loop never copies tensors.
While every slot is busy requests pile up in the queue and the next batch is fuller: the
batch size follows the load. The queue itself is bounded by the server's admission
(``--max-queue``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from neofleet.runtime.errors import NotReadyError
from neofleet.runtime.server.batching import pack, split

RunFn = Callable[[list[np.ndarray]], list[np.ndarray]]
BatchReport = Callable[[int, list[float]], None]


@dataclass
class _Pending:
    inputs: list[np.ndarray]
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Runs requests of 1..max_rows rows in batches of the bundle's ``batch`` rows."""

    def __init__(self, run: RunFn, executor: Executor, *, batch: int, max_rows: int,
                 timeout_s: float, slots: int, report: BatchReport) -> None:
        self._run, self._executor, self._report = run, executor, report
        self._batch, self._max_rows, self._timeout = batch, max_rows, timeout_s
        self._slots = asyncio.Semaphore(slots)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._collecting: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._collector = asyncio.create_task(self._collect_forever(), name="neofleet-batcher")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        leftovers = [*self._collecting, *([self._carry] if self._carry else [])]
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(NotReadyError("the server is shutting down"))

    async def submit(self, inputs: list[np.ndarray], rows: int) -> list[np.ndarray]:
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, rows, future))
        return await future

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            items = await self._collect()
            task = asyncio.create_task(self._run_batch(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _collect(self) -> list[_Pending]:
        first = await self._next(None)
        assert first is not None
        items, rows = [first], first.rows
        self._collecting = items  # failed by stop() if cancelled before it runs
        deadline = time.monotonic() + self._timeout
        while rows < self._max_rows:
            item = await self._next(deadline)
            if item is None:
                break
            if rows + item.rows > self._max_rows:
                self._carry = item
                break
            items.append(item)
            rows += item.rows
        self._collecting = []
        return items

    async def _next(self, deadline: float | None) -> _Pending | None:
        """The next live request; None once ``deadline`` (monotonic) passes."""
        while True:
            item, self._carry = self._carry, None
            if item is None and not self._queue.empty():
                item = self._queue.get_nowait()
            if item is None:
                if deadline is None:
                    item = await self._queue.get()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        return None
            if not item.future.done():  # skip requests whose client went away
                return item

    async def _run_batch(self, items: list[_Pending]) -> None:
        try:
            loop = asyncio.get_running_loop()
            started, parts = await loop.run_in_executor(self._executor, self._work, items)
            self._report(sum(i.rows for i in items), [started - i.enqueued for i in items])
            for item, part in zip(items, parts, strict=True):
                if not item.future.done():
                    item.future.set_result(part)
        except Exception as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            self._slots.release()

    def _work(self, items: list[_Pending]) -> tuple[float, list[list[np.ndarray]]]:
        started = time.perf_counter()
        outputs = self._run(pack([i.inputs for i in items], self._batch))
        return started, split(outputs, [i.rows for i in items])
