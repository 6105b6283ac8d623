"""The V2 path end to end without the pipeline: discovery for "all" filters, and one
window fetched whole (every page of every request) and split into its slices.

The long-lived service runs windows through the pipeline (rate limiter, retries,
bounded stream, batched writer); this sequential form is what the tests, the
acceptance checks and a one-off collection use, and it is the order of calls the
pipeline must keep: check each request, page to the end, split, write the
window's slices in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from collector.model import Target
from collector.ports import QueueInfo
from collector.v2 import catalog
from collector.v2.assemble import split_window
from collector.v2.model import (
    AgentInfo,
    CompletedSliceV2,
    PageV2,
    ResourceInfo,
    V2Request,
    V2Window,
)
from collector.v2.planner import check_request


class V2Source(Protocol):
    """What the V2 path needs of Connect (``BotocoreConnect`` implements it)."""

    async def get_metric_data_v2(self, target: Target, request: V2Request, next_token: str | None) -> PageV2: ...

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]: ...

    async def list_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]: ...

    async def search_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]: ...

    async def list_routing_profiles(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]: ...

    async def list_user_hierarchy_groups(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]: ...


class Discovered:
    """An instance's resources: for ``"all"`` filters and for the join tables."""

    def __init__(self) -> None:
        self.queues: list[QueueInfo] = []
        self.agents: list[AgentInfo] = []
        self.routing_profiles: list[ResourceInfo] = []
        self.hierarchy_groups: list[ResourceInfo] = []

    def filter_values(self) -> dict[str, list[str]]:
        """API filter key -> IDs. ListUserHierarchyGroups does not give a group's level,
        so an ``"all"`` hierarchy filter lists every group (a group of another level
        matches nothing)."""
        out = {
            catalog.QUEUE: [x.id for x in self.queues],
            catalog.AGENT: [x.id for x in self.agents],
            catalog.ROUTING_PROFILE: [x.id for x in self.routing_profiles],
        }
        for level in catalog.HIERARCHY_LEVELS:
            out[level] = [x.id for x in self.hierarchy_groups]
        return out


async def discover(source: V2Source, target: Target, keys: Sequence[str], names: bool = True) -> Discovered:
    """List what the ``"all"`` filters ``keys`` need (every page); with ``names``, the
    agents always (through SearchUsers), for the ``agents`` table."""
    found = Discovered()
    wanted = set(keys)
    if catalog.QUEUE in wanted:
        token: str | None = None
        while True:
            qs, token = await source.list_queues(target, token)
            found.queues += [x for x in qs if x.queue_type == "STANDARD"]
            if not token:
                break
    if catalog.AGENT in wanted or names:
        token = None
        while True:
            # SearchUsers also gives names, routing profile and hierarchy group (for the joins)
            users, token = await (source.search_users if names else source.list_users)(target, token)
            found.agents += users
            if not token:
                break
    if catalog.ROUTING_PROFILE in wanted:
        token = None
        while True:
            rps, token = await source.list_routing_profiles(target, token)
            found.routing_profiles += rps
            if not token:
                break
    if wanted & set(catalog.HIERARCHY_LEVELS):
        token = None
        while True:
            groups, token = await source.list_user_hierarchy_groups(target, token)
            found.hierarchy_groups += groups
            if not token:
                break
    return found


async def fetch_window(source: V2Source, window: V2Window, now: datetime) -> list[PageV2]:
    """Every page of every request of the window; each request checked before it leaves."""
    pages: list[PageV2] = []
    for req in window.requests:
        check_request(req, now)
        token: str | None = None
        while True:
            page = await source.get_metric_data_v2(window.target, req, token)
            pages.append(page)
            if not page.next_token:
                break
            token = page.next_token
    return pages


async def collect_window(
    source: V2Source, window: V2Window, now: datetime, collected_at: datetime
) -> list[CompletedSliceV2]:
    return split_window(window, await fetch_window(source, window, now), collected_at)
