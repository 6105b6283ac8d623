"""Rate limiters keyed the way AWS throttles: one per (account, Region, API)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from collector import catalog


@dataclass
class Limiters:
    """Shared by every instance of an account and by scheduled and one-off work alike."""

    overrides: dict[str, tuple[float, int]] = field(default_factory=dict)
    _limiters: dict[tuple[str, str, str], AsyncLimiter] = field(default_factory=dict)

    def quota(self, api: str) -> tuple[float, int]:
        return self.overrides.get(api) or catalog.DEFAULT_QUOTAS[api]

    def get(self, account: str, region: str, api: str) -> AsyncLimiter:
        key = (account, region, api)
        lim = self._limiters.get(key)
        if lim is None:
            rate, burst = self.quota(api)
            # A leaky bucket of ``burst`` requests that drains at ``rate`` per second.
            lim = self._limiters[key] = AsyncLimiter(burst, burst / rate)
        return lim

    def keys(self) -> list[tuple[str, str, str]]:
        return list(self._limiters)


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff, bounded attempts."""

    max_attempts: int = 8
    base: float = 0.1
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return rng.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))
