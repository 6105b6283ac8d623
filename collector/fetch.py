"""The one paging loop: every request of a fetch unit paged to its end, then the unit's
slices assembled.

Each page goes through :func:`collector.retry.retry` under the limiter of (account,
Region, the unit's API), with every limit of the API checked right before it leaves.
Throttling and transient failures are retried with full-jitter backoff up to a bound;
a 400 is a bug and fails the unit's slices at once; an expired NextToken restarts that
request's paging (a few times).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from collector import errors
from collector.ports import Clock, CompletedSlice, ConnectSource, FetchUnit
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy, retry

log = structlog.get_logger("collector.fetch")

MAX_TOKEN_RESTARTS = 3


class SliceFailure(errors.CollectorError):
    """The slice could not be collected:"""


@dataclass
class FetchContext:
    """What fetching needs: the source, the limiters, the one retry path's pieces."""

    source: ConnectSource
    limiters: Limiters
    policy: RetryPolicy
    clock: Clock
    rng: random.Random
    counters: Counters


async def _page(unit: FetchUnit, request: Any, token: str | None, ctx: FetchContext) -> tuple[Any, str | None]:
    t = unit.target
    try:
        return await retry(
            lambda: unit.page(ctx.source, request, token),
            operation=unit.operation,
            policy=ctx.policy,
            clock=ctx.clock,
            rng=ctx.rng,
            limiter=ctx.limiters.get(t.account, t.region, unit.operation),
            shard=t.limiter_key,
            counters=ctx.counters,
            before=lambda: unit.check(request, ctx.clock.now()),  # every limit, right before it leaves
        )
    except (errors.Throttled, errors.TransientApiError) as e:
        raise SliceFailure(f"gave up after {ctx.policy.max_attempts} attempts: {e}") from None


async def _pages(unit: FetchUnit, request: Any, ctx: FetchContext) -> list[Any]:
    """Every page of one request; an expired NextToken starts its paging again."""
    restarts = 0
    while True:
        pages: list[Any] = []
        token: str | None = None
        try:
            while True:
                page, token = await _page(unit, request, token, ctx)
                pages.append(page)
                log.debug("page_fetched", slice=str(unit.slice_keys[0]), more=bool(token))
                if not token:
                    return pages
        except errors.ExpiredToken:
            restarts += 1
            if restarts > MAX_TOKEN_RESTARTS:
                raise SliceFailure("NextToken kept expiring between pages") from None
            log.warning("paging_restarted", slice=str(unit.slice_keys[0]), restarts=restarts)


async def fetch_unit(unit: FetchUnit, ctx: FetchContext) -> Sequence[CompletedSlice]:
    """The unit's slices, whole, or :class:`SliceFailure` (which fails all of them)."""
    try:
        pages: list[Any] = []
        for request in unit.requests:
            pages += await _pages(unit, request, ctx)
        return unit.assemble(pages, ctx.clock.now(), unit.target.fence)
    except (errors.PlanError, errors.ApiError, errors.MalformedResponse) as e:
        raise SliceFailure(str(e)) from None
