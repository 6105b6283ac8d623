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


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write stored; ``fenced`` lists the slices refused because their shard's lease
    had moved on to another replica, each with the reason."""

    rows: int = 0
    values: int = 0
    fenced: tuple[tuple[SliceKey, str], ...] = ()

    @property
    def fenced_keys(self) -> list[SliceKey]:
        return [k for k, _reason in self.fenced]


class MetricSink(Protocol):
    """Stores completed slices atomically: every slice of a batch whose lease is still held
    (or that has no lease), or none of them."""

    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> WriteResult: ...
