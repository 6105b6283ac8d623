"""Where the V2 path meets its adapters: the store and source it needs beside v1's.

:func:`collector.wiring.runtime` plugs ``PgStoreV2`` and the ``BotocoreConnect``
client in as :class:`V2Ports` (``Runtime.v2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from collector.ports import WriteResult
from collector.v2.collect import V2Source
from collector.v2.model import AgentInfo, CompletedSliceV2, ResourceInfo

__all__ = ["V2Ports", "V2Source", "V2Store"]


class V2Store(Protocol):
    """Writes V2 slices (through v1's transaction) and keeps the resources for joins; the
    scheduler's lookups of collected slices by start (a DST day is 23 or 25 hours long)."""

    async def write(self, batch: Sequence[CompletedSliceV2], run_id: int | None) -> WriteResult: ...

    async def save_agents(self, instance_id: str, region: str, account: str | None,
                          agents: Sequence[AgentInfo]) -> None: ...

    async def save_routing_profiles(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo]) -> None: ...

    async def save_hierarchy_groups(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo],
                                    levels: Sequence[int | None] | None = None) -> None: ...

    async def collected_starts_v2(
        self, instance_id: str, profile: str, start: datetime, end: datetime
    ) -> set[datetime]: ...

    async def revisits_due_v2(
        self, instance_id: str, profile: str, delays: list[int], now: datetime, oldest: datetime
    ) -> list[datetime]: ...

    async def next_revisit_v2(
        self, instance_id: str, profile: str, delays: list[int], now: datetime, oldest: datetime
    ) -> datetime | None: ...

    async def newest_collected_v2(self, instance_id: str, profile: str) -> datetime | None: ...


@dataclass
class V2Ports:
    store: V2Store
    source: V2Source
