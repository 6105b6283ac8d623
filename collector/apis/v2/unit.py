"""A GetMetricDataV2 window as a unit of fetch work.

A :class:`V2Window` is a run of consecutive slices of one (instance, profile) fetched
by the same requests (as much range per request as the API allows): every request
covers all its slices, the results are split by ``MetricInterval`` into the slices,
and the window's slices are written in one transaction, each replacing what was
stored for it before. The exactly-once unit stays the slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from collector.apis.v2.assemble import split_window
from collector.apis.v2.model import PageV2, V2Request
from collector.apis.v2.planner import check_request
from collector.model import Fence, SliceKey, Target
from collector.ports import CompletedSlice, ConnectSource

OPERATION = "GetMetricDataV2"


@dataclass(frozen=True, slots=True)
class V2Window:
    """Consecutive slices of one (instance, profile) and every request that collects them whole."""

    target: Target
    profile: str
    slices: tuple[SliceKey, ...]
    requests: tuple[V2Request, ...]

    @property
    def start(self) -> datetime:
        return self.slices[0].start

    @property
    def end(self) -> datetime:
        return self.slices[-1].end

    @property
    def deadline(self) -> datetime | None:
        return None  # history: served until it ages out (the planner checks that)

    @property
    def operation(self) -> str:
        return OPERATION

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return self.slices

    def check(self, request: V2Request, now: datetime) -> None:
        check_request(request, now)

    async def page(self, source: ConnectSource, request: V2Request, token: str | None) -> tuple[PageV2, str | None]:
        page: PageV2 = await source.get_metric_data_v2(self.target, request, token)
        return page, page.next_token

    def assemble(self, pages: Sequence[PageV2], collected_at: datetime, fence: Fence | None) -> list[CompletedSlice]:
        return split_window(self.slices, pages, collected_at, fence)
