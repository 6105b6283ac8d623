"""The Protocols where the core meets its adapters (Connect, Postgres, clocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from collector.model import Dims, MetricDataRequest, MetricSet, SliceKey, Target


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueInfo:
    id: str
    arn: str
    name: str
    queue_type: str = "STANDARD"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    id: str
    arn: str
    alias: str
    status: str


class ConnectSource(Protocol):
    """Talks to one Connect endpoint; raises the :mod:`collector.errors` API classes."""

    async def get_metric_data(
        self, target: Target, request: MetricDataRequest, next_token: str | None
    ) -> tuple[list[tuple[Dims, list[float | None]]], str | None]: ...

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]: ...

    async def list_instances(self, target: Target, next_token: str | None) -> tuple[list[InstanceInfo], str | None]: ...


@dataclass(slots=True)
class CompletedSlice:
    key: SliceKey
    pages: list[tuple[MetricSet, list[tuple[Dims, list[float | None]]]]]
    collected_at: datetime
    fence: tuple[str, str, int] | None = None  # (account, region, lease generation)

    @property
    def rows(self) -> int:
        return sum(len(rows) for _m, rows in self.pages)


class MetricSink(Protocol):
    """Stores completed slices atomically: all of a batch, or none of it."""

    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> tuple[int, int]:
        """Returns (rows, values) written."""
        ...
