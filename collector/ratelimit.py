"""Rate limiting keyed the way AWS throttles: one limiter per (account, Region, API).

Not aiolimiter: its rate is fixed at construction and it reads the event loop's
clock, while the collector must step an account's rate down and back up as it
meets throttling (AIMD) and be driven by an injected clock in tests. The bucket
below is the same leaky-bucket idea with both of those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import anyio

from collector import quotas
from collector.ports import Clock


class AdaptiveLimiter:
    """A token bucket of ``burst`` that refills at ``rate`` per second, FIFO.

    AIMD: a throttle that follows another within ``window`` seconds multiplies the rate
    by ``decrease`` (at most once per refill interval, so one burst of throttled
    in-flight calls counts once, and never below ``floor`` x ceiling); a lone throttle
    (jitter) is only retried. Every ``recover_after`` seconds without a throttle the rate
    grows by ``step`` x ceiling until it is back at the ceiling. A quota lower than
    configured is found in a few throttles instead of a storm of them.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock,
        *,
        decrease: float = 0.8,
        step: float = 0.05,
        recover_after: float = 2.0,
        floor: float = 0.05,
        window: float = 10.0,
    ) -> None:
        self.ceiling = rate
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.decrease, self.step, self.recover_after = decrease, step, recover_after
        self.window = window
        self.floor = floor * rate
        self._tokens = float(burst)
        self._stamp = clock.monotonic()
        self._lock = anyio.Lock()
        self._last_throttle = -1e18
        self._last_change = -1e18
        self.throttles = 0
        self.acquired = 0

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:  # anyio's Lock is fair: waiters go in arrival order
            while True:
                self._refill()
                if self._tokens >= 1.0 - 1e-9:  # float refill may land a hair short of 1
                    self._tokens = max(0.0, self._tokens - 1.0)
                    self.acquired += 1
                    return
                await self.clock.sleep((1.0 - self._tokens) / self.rate)

    async def __aenter__(self) -> AdaptiveLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def throttled(self) -> None:
        now = self.clock.monotonic()
        self.throttles += 1
        repeated = now - self._last_throttle <= self.window
        self._last_throttle = now
        if repeated and now - self._last_change >= 1.0 / self.rate:
            self._refill()
            self.rate = max(self.floor, self.rate * self.decrease)
            self._tokens = min(self._tokens, 0.0)  # no burst right after a throttle
            self._last_change = now

    def succeeded(self) -> None:
        if self.rate >= self.ceiling:
            return
        now = self.clock.monotonic()
        if now - max(self._last_throttle, self._last_change) >= self.recover_after:
            self._refill()
            self.rate = min(self.ceiling, self.rate + self.step * self.ceiling)
            self._last_change = now


@dataclass
class Limiters:
    """Shared by every instance of an account and by scheduled and one-off work alike."""

    clock: Clock | None = None
    overrides: dict[str, tuple[float, int]] = field(default_factory=dict)
    # (account, API) -> (rate, burst): per-account quotas from the config
    account_overrides: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    # Keep one token of the API's burst in reserve: requests that arrive closer together
    # than they were sent (network and scheduling jitter) then find it, instead of a 429.
    # ``headroom`` < 1 also runs below the rate (for clocks that disagree).
    headroom: float = 1.0
    _limiters: dict[tuple[str, str, str], AdaptiveLimiter] = field(default_factory=dict)
    factory: Callable[..., AdaptiveLimiter] = AdaptiveLimiter

    def quota(self, account: str, api: str) -> tuple[float, int]:
        return (
            self.account_overrides.get((account, api))
            or self.overrides.get(api)
            or quotas.DEFAULT_QUOTAS[api]
        )

    def get(self, account: str, region: str, api: str) -> AdaptiveLimiter:
        key = (account, region, api)
        lim = self._limiters.get(key)
        if lim is None:
            if self.clock is None:
                from collector.clock import SystemClock

                self.clock = SystemClock()
            rate, burst = self.quota(account, api)
            lim = self._limiters[key] = self.factory(
                rate * self.headroom, max(1, burst - 1), self.clock
            )
        return lim

    def keys(self) -> list[tuple[str, str, str]]:
        return list(self._limiters)
