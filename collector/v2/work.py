"""A V2 window as a unit of the pipeline's fetch work (:class:`collector.pipeline.FetchUnit`).

Every request of the window is paged to its end through the one retry path
(:func:`collector.retry.retry`) under the limiter of (account, Region,
``GetMetricDataV2``), each request checked against every limit right before it
leaves; an expired NextToken restarts that request's paging. The pages are split
by ``MetricInterval`` into the window's slices, which the writer stores in one
batch (one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from collector import errors
from collector.fetch import MAX_TOKEN_RESTARTS, SliceFailure
from collector.model import SliceKey
from collector.pipeline import FetchContext, Stored
from collector.retry import retry
from collector.v2.assemble import split_window
from collector.v2.collect import V2Source
from collector.v2.model import PageV2, V2Request, V2Window
from collector.v2.planner import check_request

log = structlog.get_logger("collector.v2.work")

API = "GetMetricDataV2"


@dataclass(frozen=True, slots=True)
class WindowUnit:
    """One V2 window: a run of slices fetched by the same requests, written together."""

    window: V2Window
    source: V2Source
    api: str = API

    @property
    def limiter_key(self) -> tuple[str, str]:
        return self.window.target.limiter_key

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.window.start, self.window.target.instance_id)

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return self.window.slices

    async def _page(self, ctx: FetchContext, req: V2Request, token: str | None) -> PageV2:
        t = self.window.target
        try:
            return await retry(
                lambda: self.source.get_metric_data_v2(t, req, token),
                operation=API, policy=ctx.policy, clock=ctx.clock, rng=ctx.rng,
                limiter=ctx.limiters.get(t.account, t.region, API), shard=t.limiter_key,
                counters=ctx.counters,
                before=lambda: check_request(req, ctx.clock.now()),  # every limit, right before it leaves
            )
        except (errors.Throttled, errors.TransientApiError) as e:
            raise SliceFailure(f"gave up after {ctx.policy.max_attempts} attempts: {e}") from None

    async def _request(self, ctx: FetchContext, req: V2Request) -> list[PageV2]:
        restarts = 0
        while True:
            pages: list[PageV2] = []
            token: str | None = None
            try:
                while True:
                    page = await self._page(ctx, req, token)
                    pages.append(page)
                    log.debug("page_fetched", window=str(self.window.slices[0]), rows=len(page.rows),
                              more=bool(page.next_token))
                    token = page.next_token
                    if not token:
                        return pages
            except errors.ExpiredToken:
                restarts += 1
                if restarts > MAX_TOKEN_RESTARTS:
                    raise SliceFailure("NextToken kept expiring between pages") from None
                log.warning("paging_restarted", window=str(self.window.slices[0]), restarts=restarts)

    async def fetch(self, ctx: FetchContext) -> Sequence[Stored]:
        pages: list[PageV2] = []
        try:
            for req in self.window.requests:
                pages += await self._request(ctx, req)
            t = self.window.target
            fence = (t.account, t.region, t.lease) if t.lease is not None else None
            return split_window(self.window, pages, ctx.clock.now(), fence)
        except errors.PlanError as e:
            raise SliceFailure(str(e)) from None
        except (errors.ApiError, errors.MalformedResponse) as e:
            raise SliceFailure(str(e)) from None
