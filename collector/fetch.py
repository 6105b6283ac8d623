"""Fetchers: one slice at a time per worker, paging each request to its end.

Throttling and transient failures are retried with full-jitter backoff up to a
bound (:func:`collector.retry.retry`); a 400 is a bug and fails the slice at once; an expired NextToken
restarts that request's paging.
"""

from __future__ import annotations

import random

import structlog

from collector import errors
from collector.model import Dims, MetricDataRequest, MetricSet, SliceWork
from collector.planner import check_request
from collector.ports import Clock, CompletedSlice, ConnectSource
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy, retry

log = structlog.get_logger("collector.fetch")

MAX_TOKEN_RESTARTS = 3


FetchCounters = Counters  # the per-run tallies, under their old name


class SliceFailure(errors.CollectorError):
    """The slice could not be collected:"""


async def _call(
    work: SliceWork,
    req: MetricDataRequest,
    token: str | None,
    *,
    source: ConnectSource,
    limiters: Limiters,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    counters: Counters,
) -> tuple[list[tuple[Dims, list[float | None]]], str | None]:
    target = work.target
    try:
        return await retry(
            lambda: source.get_metric_data(target, req, token),
            operation="GetMetricData",
            policy=policy,
            clock=clock,
            rng=rng,
            limiter=limiters.get(target.account, target.region, "GetMetricData"),
            shard=target.limiter_key,
            counters=counters,
            before=lambda: check_request(req, clock.now()),  # every limit, right before it leaves
        )
    except (errors.Throttled, errors.TransientApiError) as e:
        raise SliceFailure(f"gave up after {policy.max_attempts} attempts: {e}") from None


_DIMENSION_NAMES = ("Queue", "Channel", "RoutingProfile", "AgentStatus", "RoutingStepExpression",
                    "Subtype", "ValidationTestType")


def _check_unique_groups(pages: list[tuple[MetricSet, list[tuple[Dims, list[float | None]]]]]) -> None:
    """A dimension group appears once per metric set in a slice; a response that repeats
    one is malformed (storing it would collide with itself)."""
    seen: dict[MetricSet, set[Dims]] = {}
    for ms, rows in pages:
        groups = seen.setdefault(ms, set())
        for d, _v in rows:
            if d in groups:
                named = ", ".join(f"{n}={v}" for n, v in zip(_DIMENSION_NAMES, d, strict=False) if v is not None)
                raise SliceFailure(f"the response repeats the dimension group {{{named or 'no dimensions'}}}")
            groups.add(d)


async def collect_slice(
    work: SliceWork,
    *,
    source: ConnectSource,
    limiters: Limiters,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    counters: Counters,
) -> CompletedSlice:
    """Every page of every request of one slice, or :class:`SliceFailure`."""
    pages: list[tuple[MetricSet, list[tuple[Dims, list[float | None]]]]] = []
    try:
        for req in work.requests:
            restarts = 0
            while True:
                req_pages: list[tuple[MetricSet, list[tuple[Dims, list[float | None]]]]] = []
                token: str | None = None
                try:
                    while True:
                        rows, token = await _call(
                            work, req, token, source=source, limiters=limiters, policy=policy,
                            clock=clock, rng=rng, counters=counters,
                        )
                        req_pages.append((req.metrics, rows))
                        log.debug("page_fetched", slice=str(work.key), rows=len(rows), more=bool(token))
                        if not token:
                            break
                except errors.ExpiredToken:
                    restarts += 1
                    if restarts > MAX_TOKEN_RESTARTS:
                        raise SliceFailure("NextToken kept expiring between pages") from None
                    log.warning("paging_restarted", slice=str(work.key), restarts=restarts)
                    continue
                pages.extend(req_pages)
                break
    except errors.PlanError as e:
        raise SliceFailure(str(e)) from None
    except (errors.ApiError, errors.MalformedResponse) as e:
        raise SliceFailure(str(e)) from None
    _check_unique_groups(pages)
    t = work.target
    fence = (t.account, t.region, t.lease) if t.lease is not None else None
    return CompletedSlice(work.key, pages, clock.now(), fence)
