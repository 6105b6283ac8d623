"""A snapshot as a unit of fetch work: every request of one period of one instance (100
queues or routing profiles a request, or 100 agents), paged to the end, then stored as one
slice, whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from collector.apis.current import catalog
from collector.apis.current.codec import AGENTS, CURRENT
from collector.apis.current.gauges import GAUGES
from collector.apis.current.model import (
    AgentState,
    CurrentPage,
    CurrentRequest,
    Dims,
    UserDataRequest,
    UserPage,
)
from collector.apis.current.planner import check_current, check_user_data
from collector.errors import MalformedResponse, PlanErrorLive
from collector.model import Fence, SliceKey, Target
from collector.ports import CompletedSlice, ConnectSource


def _in_period(key: SliceKey, t: datetime) -> None:
    """A snapshot belongs to its period: a page (or a retry) after its end, or one taken
    after it, fails the snapshot (its period is a gap) rather than land in the wrong period."""
    if t >= key.end:
        raise PlanErrorLive(f"its period ended at {key.end.isoformat()} before the snapshot was taken whole")


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One period's GetCurrentMetricData snapshot of one instance."""

    key: SliceKey
    target: Target
    requests: tuple[CurrentRequest, ...]

    @property
    def deadline(self) -> datetime | None:
        return self.key.end  # a snapshot taken later would belong to another period

    @property
    def operation(self) -> str:
        return catalog.CURRENT_OPERATION

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return (self.key,)

    def check(self, request: CurrentRequest, now: datetime) -> None:
        _in_period(self.key, now)
        check_current(request)

    async def page(self, source: ConnectSource, request: CurrentRequest, token: str | None
                   ) -> tuple[CurrentPage, str | None]:
        page: CurrentPage = await source.get_current_metric_data(self.target, request, token)
        return page, page.next_token

    def assemble(self, pages: Sequence[CurrentPage], collected_at: datetime, fence: Fence | None
                 ) -> list[CompletedSlice]:
        metrics = self.requests[0].metrics
        rows: dict[Dims, list[float | None]] = {}
        for p in pages:
            for dims, values in p.rows:
                if dims in rows:
                    raise MalformedResponse(f"the dimension group {dims} came back twice in one snapshot")
                rows[dims] = values
        times = [p.snapshot_at for p in pages if p.snapshot_at is not None]
        taken = min(times) if times else collected_at
        _in_period(self.key, max(times, default=collected_at))
        merged = list(rows.items())
        publish = partial(GAUGES.publish, self.key.instance_id, self.key.profile, metrics, merged, taken)
        return [CompletedSlice(self.key, [(metrics, merged)] if merged else [], collected_at, fence,
                               CURRENT, taken_at=taken, on_stored=publish)]


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """One period's GetCurrentUserData snapshot of one instance."""

    key: SliceKey
    target: Target
    requests: tuple[UserDataRequest, ...]

    @property
    def deadline(self) -> datetime | None:
        return self.key.end  # a snapshot taken later would belong to another period

    @property
    def operation(self) -> str:
        return catalog.USER_DATA_OPERATION

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return (self.key,)

    def check(self, request: UserDataRequest, now: datetime) -> None:
        _in_period(self.key, now)
        check_user_data(request)

    async def page(self, source: ConnectSource, request: UserDataRequest, token: str | None
                   ) -> tuple[UserPage, str | None]:
        page: UserPage = await source.get_current_user_data(self.target, request, token)
        return page, page.next_token

    def assemble(self, pages: Sequence[UserPage], collected_at: datetime, fence: Fence | None
                 ) -> list[CompletedSlice]:
        _in_period(self.key, collected_at)
        agents: dict[str, AgentState] = {}
        for p in pages:
            for a in p.agents:
                agents.setdefault(a.agent_id, a)  # an agent in two queues' batches is one agent
        rows: list[tuple[AgentState, list[float | None]]] = [(a, []) for a in agents.values()]
        return [CompletedSlice(self.key, [("agents", rows)] if rows else [], collected_at, fence,
                               AGENTS, taken_at=collected_at,
                               on_stored=partial(GAUGES.taken, self.key.instance_id, self.key.profile, collected_at))]
