"""The shutdown delay: readiness goes at the first signal, uvicorn's shutdown waits
``--shutdown-delay-seconds`` (or a second signal); with no delay it starts at once."""

from __future__ import annotations

import asyncio
import signal

import uvicorn

from neofleet.runtime.server.run import ShutdownDelay, _Server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_delay_shuts_down_at_the_first_signal() -> None:
    delay = ShutdownDelay(0, Clock())
    assert delay.signalled() and not delay.over


def test_the_delay_runs_from_the_first_signal_and_a_second_ends_it() -> None:
    clock = Clock()
    delay = ShutdownDelay(2.5, clock)
    assert not delay.over  # no signal yet
    assert not delay.signalled()
    clock.now += 2.4
    assert not delay.over
    clock.now += 0.1
    assert delay.over
    second = ShutdownDelay(2.5, clock)
    assert not second.signalled() and second.signalled()


def _server(seconds: float, clock: Clock, signals: list[str]) -> _Server:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    return _Server(uvicorn.Config(app), on_signal=lambda: signals.append("drain"),
                   delay=ShutdownDelay(seconds, clock))


def test_server_keeps_running_through_the_delay_after_readiness_went() -> None:
    clock, signals = Clock(), list[str]()
    server = _server(2, clock, signals)
    server.handle_exit(signal.SIGTERM, None)
    assert signals == ["drain"] and not server.should_exit
    assert asyncio.run(server.on_tick(1)) is False
    clock.now += 2
    assert asyncio.run(server.on_tick(1)) is True


def test_a_second_signal_skips_the_rest_of_the_delay() -> None:
    clock, signals = Clock(), list[str]()
    server = _server(60, clock, signals)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGINT, None)
    assert signals == ["drain", "drain"]
    assert server.should_exit and not server.force_exit


def test_without_a_delay_the_first_signal_stops_the_server() -> None:
    server = _server(0, Clock(), [])
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
