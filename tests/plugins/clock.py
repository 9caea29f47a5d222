"""Clocks a test controls, so timing properties hold however loaded the machine is.

`FakeClock` stands in for the `time` module of code that polls (monotonic + sleep): a sleep
advances the clock at once. `run_on_virtual_clock` runs a coroutine on an asyncio loop whose
time only moves when every task waits on a timer, by exactly that timer's delay.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class FakeClock:
    """monotonic(), time() and sleep() of a clock that moves only when slept on."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


class _InstantSelector(selectors.DefaultSelector):
    """Never blocks: the time the loop would have waited is added to its virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.loop is not None and timeout is not None and timeout > 0:
            self.loop.advance(timeout)
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _InstantSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_on_virtual_clock(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
