"""Real time, a clock the tests drive by hand, and a sleep that a stop event cuts short."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ManualClock:
    """Time moves only when told to; ``sleep`` advances it at once (no real waiting)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 0.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, t: datetime) -> None:
        self._mono += (t - self._now).total_seconds()
        self._now = t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()


class _Sleeper(Protocol):
    async def sleep(self, seconds: float) -> None: ...


async def sleep_or_stop(clock: _Sleeper, seconds: float, stop: anyio.Event) -> None:
    """Sleep on ``clock`` for ``seconds``, or until ``stop`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait_stop)
        await clock.sleep(seconds)
        tg.cancel_scope.cancel()
