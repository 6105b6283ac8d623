"""Limiter keys, pacing and AIMD, with an injected clock (nothing here waits for real)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import anyio

from collector.clock import ManualClock
from collector.config import Settings
from collector.ratelimit import AdaptiveLimiter, Limiters
from collector.wiring import limiters_for


def test_limiters_are_keyed_by_account_region_and_api() -> None:
    lims = Limiters(clock=ManualClock(datetime.now(UTC)))
    a = lims.get("111", "us-east-1", "GetMetricData")
    assert lims.get("111", "us-east-1", "GetMetricData") is a  # shared by every instance of the account
    assert lims.get("222", "us-east-1", "GetMetricData") is not a
    assert lims.get("111", "eu-west-2", "GetMetricData") is not a
    assert lims.get("111", "us-east-1", "ListQueues") is not a
    assert abs(a.rate - 5.0 * 1.0) < 1e-9 and a.burst == 7
    assert abs(lims.get("111", "us-east-1", "ListQueues").rate - 10 * 1.0) < 1e-9


def test_per_account_overrides_from_config() -> None:
    s = Settings.model_validate(
        {"accounts": [{"id": "111111111111", "get_metric_data_rate": 2.0, "get_metric_data_burst": 3}]}
    )
    lims = limiters_for(s, ManualClock(datetime.now(UTC)))
    assert lims.quota("111111111111", "GetMetricData") == (2.0, 3)
    assert lims.quota("222", "GetMetricData") == (5.0, 8)


async def test_bucket_paces_at_the_rate_after_the_burst() -> None:
    clock = ManualClock(datetime.now(UTC))
    lim = AdaptiveLimiter(5.0, 8, clock)
    times = []
    for _ in range(28):
        async with lim:
            times.append(clock.monotonic())
    assert times[:8] == [0.0] * 8  # the burst goes at once
    assert abs(times[-1] - 20 / 5.0) < 1e-6  # then exactly 5 per second
    gaps = [b - a for a, b in itertools.pairwise(times[8:])]
    assert all(abs(g - 0.2) < 1e-6 for g in gaps)


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = ManualClock(datetime.now(UTC))
    lim = AdaptiveLimiter(1.0, 1, clock)
    order: list[int] = []

    async def take(i: int) -> None:
        async with lim:
            order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(take, i)
            await anyio.lowlevel.checkpoint()
    assert order == list(range(6))


def test_aimd_steps_down_on_throttles_and_recovers() -> None:
    clock = ManualClock(datetime.now(UTC))
    lim = AdaptiveLimiter(5.0, 8, clock, decrease=0.5, step=0.1, recover_after=5.0)
    lim.throttled()
    assert lim.rate == 5.0  # a lone throttle is jitter: retried, no step down
    clock.advance(1.0)
    lim.throttled()  # a second within the window: the quota is lower than configured
    assert lim.rate == 2.5
    lim.throttled()  # the same burst of in-flight calls: counted once
    assert lim.rate == 2.5
    clock.advance(1.0)
    lim.throttled()
    assert lim.rate == 1.25
    clock.advance(4.0)
    lim.succeeded()
    assert lim.rate == 1.25  # not yet: recovery waits for a quiet spell
    clock.advance(1.5)
    lim.succeeded()
    assert abs(lim.rate - 1.75) < 1e-9
    for _ in range(20):
        clock.advance(5.0)
        lim.succeeded()
    assert lim.rate == 5.0  # back to the ceiling, never above


async def test_aimd_finds_a_lower_real_quota_with_few_throttles() -> None:
    """Configured 5/s, the account really allows 2/s: the limiter settles near 2/s."""
    from collector.simulator.server import TokenBucket

    clock = ManualClock(datetime.now(UTC))
    server = TokenBucket(2.0, 3, clock.monotonic)
    lim = AdaptiveLimiter(5.0, 8, clock)
    throttled = 0
    for _ in range(600):
        async with lim:
            if server.take():
                lim.succeeded()
            else:
                throttled += 1
                lim.throttled()
    assert throttled < 0.1 * 600
    achieved = (600 - throttled) / clock.monotonic()
    assert 1.5 < achieved <= 2.0 + 3 / clock.monotonic()
