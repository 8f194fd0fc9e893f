"""Dynamic batching: which bundles can batch, pack/pad/split, and the asyncio batcher."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from neofleet.runtime.errors import ServerConfigError
from neofleet.runtime.server.batcher import Batcher
from neofleet.runtime.server.batching import compiled_batch, fitting, pack, split
from neofleet.runtime.server.signature import signature_of

F32 = "float32"


def test_compiled_batch_is_the_shared_leading_dim() -> None:
    sig = signature_of([("a", F32, [4, 3]), ("b", "int64", [4])],
                       [("y", F32, [4, 2]), ("z", F32, [4])])
    assert compiled_batch(sig, 4) == 4
    assert compiled_batch(sig, 2) == 4


@pytest.mark.parametrize(("inputs", "outputs", "max_batch", "message"), [
    ([("x", [4, 3])], [("y", [4])], 8,
     r"--max-batch 8 is larger than the bundle's batch size 4 \(dim 0 of x \[4, 3\]\)"),
    ([("a", [4, 3]), ("b", [2, 3])], [("y", [4])], 2, "the inputs disagree on dim 0"),
    ([("x", [4, 3])], [("y", [4]), ("s", [1])], 2,
     r"output\(s\) s \[1\] do not have the batch \(4\) in dim 0"),
    ([("x", [4, 3])], [("s", [])], 2, "output s is a scalar"),
    ([("x", [])], [("y", [4])], 1, "input x is a scalar"),
    ([("x", [4, 3])], [("y", [4])], 0, "at least 1"),
])
def test_compiled_batch_refuses_what_cannot_batch(inputs: list[tuple[str, list[int]]],
                                                  outputs: list[tuple[str, list[int]]],
                                                  max_batch: int, message: str) -> None:
    sig = signature_of([(n, F32, s) for n, s in inputs], [(n, F32, s) for n, s in outputs])
    with pytest.raises(ServerConfigError, match=message):
        compiled_batch(sig, max_batch)


def test_fitting_counts_leading_requests_that_fit() -> None:
    assert fitting([1, 1, 1], 4) == 3
    assert fitting([2, 2, 1], 4) == 2
    assert fitting([3, 1, 1], 4) == 2
    assert fitting([5], 4) == 0
    assert fitting([], 4) == 0


def test_pack_concatenates_and_zero_pads_each_input() -> None:
    r1 = [np.array([[1, 2]], np.float32), np.array([7], np.int64)]
    r2 = [np.array([[3, 4], [5, 6]], np.float32), np.array([8, 9], np.int64)]
    a, b = pack([r1, r2], 4)
    np.testing.assert_array_equal(a, [[1, 2], [3, 4], [5, 6], [0, 0]])
    np.testing.assert_array_equal(b, [7, 8, 9, 0])
    assert a.dtype == np.float32 and b.dtype == np.int64 and a.flags.c_contiguous


def test_pack_refuses_too_many_rows_or_nothing() -> None:
    with pytest.raises(ValueError, match="3 rows do not fit a batch of 2"):
        pack([[np.zeros((3, 1))]], 2)
    with pytest.raises(ValueError, match="nothing to pack"):
        pack([], 2)


def test_split_hands_back_each_requests_rows_and_drops_padding() -> None:
    y = np.arange(8).reshape(4, 2)
    z = np.arange(4) * 10
    parts = split([y, z], [1, 2])
    assert len(parts) == 2
    np.testing.assert_array_equal(parts[0][0], [[0, 1]])
    np.testing.assert_array_equal(parts[0][1], [0])
    np.testing.assert_array_equal(parts[1][0], [[2, 3], [4, 5]])
    np.testing.assert_array_equal(parts[1][1], [10, 20])
    assert all(p.flags.c_contiguous for part in parts for p in part)


def test_split_refuses_outputs_without_the_rows() -> None:
    with pytest.raises(ValueError, match="cannot hold 3 rows"):
        split([np.zeros((2, 2))], [1, 2])
    with pytest.raises(ValueError, match="cannot hold"):
        split([np.float32(1.0) * np.ones(())], [1])


def test_pack_then_split_is_per_request_identity() -> None:
    rng = np.random.default_rng(0)
    requests = [[rng.standard_normal((n, 3)).astype(np.float32)] for n in (1, 3, 2)]
    (packed,) = pack(requests, 8)
    parts = split([packed * 2], [1, 3, 2])
    for request, (out,) in zip(requests, parts, strict=True):
        np.testing.assert_array_equal(out, request[0] * 2)


# ---------------------------------------------------------------------------- Batcher


class Recorder:
    """A fake model: y = 2x + row index marker; records the batch sizes it ran."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.reports: list[tuple[int, int]] = []
        self._delay, self._fail = delay, fail
        self._lock = threading.Lock()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        (x,) = inputs
        if self._fail:
            raise RuntimeError("backend exploded")
        if self._delay:
            threading.Event().wait(self._delay)
        with self._lock:
            self.batches.append(x.shape[0])
        return [x * 2]

    def report(self, rows: int, waits: list[float]) -> None:
        assert all(w >= 0 for w in waits)
        self.reports.append((rows, len(waits)))


async def _submit_all(batcher: Batcher, rows: list[int]) -> list[list[np.ndarray]]:
    inputs = [[np.full((n, 2), i, np.float32)] for i, n in enumerate(rows)]
    return list(await asyncio.gather(*(batcher.submit(x, n) for x, n in zip(inputs, rows,
                                                                            strict=True))))


def _run_batcher(recorder: Recorder, rows: list[int], *, max_rows: int = 4, timeout_s: float = 0.05,
                 slots: int = 1) -> list[list[np.ndarray]]:
    async def main() -> list[list[np.ndarray]]:
        with ThreadPoolExecutor(slots) as pool:
            batcher = Batcher(recorder.run, pool, batch=4, max_rows=max_rows,
                              timeout_s=timeout_s, slots=slots, report=recorder.report)
            batcher.start()
            try:
                return await asyncio.wait_for(_submit_all(batcher, rows), 10)
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_batcher_runs_concurrent_requests_together_and_splits_results() -> None:
    recorder = Recorder()
    results = _run_batcher(recorder, [1, 1, 1, 1])
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out, np.full((1, 2), 2 * i))
    assert recorder.batches == [4]  # always padded to the compiled batch
    assert recorder.reports == [(4, 4)]


def test_batcher_starts_a_new_batch_when_the_next_request_does_not_fit() -> None:
    recorder = Recorder()
    results = _run_batcher(recorder, [3, 2, 2, 1], max_rows=4)
    for i, (out,) in enumerate(results):
        assert out.shape == ([3, 2, 2, 1][i], 2)
        np.testing.assert_array_equal(out, 2 * i)
    assert [rows for rows, _ in recorder.reports] == [3, 4, 1]  # 3 | 2+2 | 1: order kept


def test_batcher_with_zero_timeout_runs_what_is_queued() -> None:
    recorder = Recorder()
    results = _run_batcher(recorder, [1, 2], timeout_s=0.0)
    assert [r[0].shape[0] for r in results] == [1, 2]
    assert sum(rows for rows, _ in recorder.reports) == 3


def test_batcher_respects_max_rows_below_the_compiled_batch() -> None:
    recorder = Recorder()
    _run_batcher(recorder, [1, 1, 1, 1], max_rows=2)
    assert [rows for rows, _ in recorder.reports] == [2, 2]
    assert recorder.batches == [4, 4]


def test_batcher_fails_every_request_of_a_failed_batch_and_keeps_going() -> None:
    recorder = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="backend exploded"):
        _run_batcher(recorder, [1, 1])


def test_stopping_the_batcher_fails_requests_still_waiting_for_their_batch() -> None:
    from neofleet.runtime.errors import NotReadyError

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(Recorder().run, pool, batch=4, max_rows=4, timeout_s=30,
                              slots=1, report=lambda rows, waits: None)
            batcher.start()
            waiting = asyncio.ensure_future(batcher.submit([np.zeros((1, 2), np.float32)], 1))
            await asyncio.sleep(0.05)  # collected, now waiting 30 s for company
            await batcher.stop()
            with pytest.raises(NotReadyError, match="shutting down"):
                await asyncio.wait_for(waiting, 5)

    asyncio.run(main())
