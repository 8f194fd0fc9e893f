"""InferenceService without HTTP: background load and warm-up, readiness, drain,
admission (--max-queue), a load that fails."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from neofleet.runtime.errors import NotReadyError, OverloadedError
from neofleet.runtime.server.metrics import Labels, ServerMetrics
from neofleet.runtime.server.service import InferenceService, ServiceSettings, zero_inputs
from neofleet.runtime.server.signature import signature_of

SIG = signature_of([("x", "float32", [1, 4])], [("y", "float32", [1, 4])])


class Doubler:
    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def run(self, input_values: Any) -> list[np.ndarray]:
        (x,) = input_values
        self.calls.append(x)
        return [x * 2]


def metrics() -> ServerMetrics:
    return ServerMetrics(Labels("m", "r", "p", "t"), backend="onnxruntime", bundle_digest="d",
                         max_batch=None)


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_ready_after_load_and_warm_up_then_not_ready_when_draining() -> None:
    model, gate = Doubler(), threading.Event()

    def load() -> Doubler:
        gate.wait(10)
        return model

    async def main() -> None:
        service = InferenceService(SIG, ServiceSettings(threads=2, max_queue=4), metrics(),
                                   load, lambda exc: None)
        await service.start()
        assert not service.ready
        with pytest.raises(NotReadyError, match="still loading"), service.admitted():
            pass
        gate.set()
        await wait_until(lambda: service.ready)
        assert len(model.calls) == 1 and not model.calls[0].any()  # warm-up on zeros
        with service.admitted():
            (y,) = await service.run([np.ones((1, 4), np.float32)], None)
        np.testing.assert_array_equal(y, 2)
        service.drain()
        assert not service.ready and service.loaded
        await service.stop()

    asyncio.run(main())


def test_admission_is_bounded_by_max_queue() -> None:
    async def main() -> None:
        service = InferenceService(SIG, ServiceSettings(threads=1, max_queue=2), metrics(),
                                   Doubler, lambda exc: None)
        await service.start()
        await wait_until(lambda: service.ready)
        with (service.admitted(), service.admitted(),
              pytest.raises(OverloadedError, match="2 requests in flight"), service.admitted()):
            pass
        with service.admitted():  # released again
            pass
        await service.stop()

    asyncio.run(main())


def test_a_failed_load_is_reported_as_fatal() -> None:
    failures: list[BaseException] = []

    def load() -> Doubler:
        raise RuntimeError("no such library")

    async def main() -> None:
        service = InferenceService(SIG, ServiceSettings(threads=1, max_queue=1), metrics(),
                                   load, failures.append)
        await service.start()
        await wait_until(lambda: bool(failures))
        assert not service.ready
        await service.stop()

    asyncio.run(main())
    assert "no such library" in str(failures[0])


def test_zero_inputs_have_the_compiled_shapes() -> None:
    sig = signature_of([("a", "float32", [4, 3]), ("b", "int64", [4])], [("y", "float32", [4])])
    a, b = zero_inputs(sig)
    assert a.shape == (4, 3) and a.dtype == np.float32 and b.dtype == np.int64
