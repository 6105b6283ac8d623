"""The Protocols where the core meets its adapters (Connect, Postgres, clocks), the
typed records that cross them, and :class:`Runtime`, the ports plugged together.

The core (service, runs, fleet, scheduler, pipeline, leases) depends only on these;
:mod:`collector.adapters` implement them and :mod:`collector.wiring` plugs them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from collector.model import Dims, MetricDataRequest, MetricSet, RunSummary, SliceKey, Target

if TYPE_CHECKING:
    from collector.config import Settings
    from collector.pipeline import PipelineOptions
    from collector.ratelimit import Limiters
    from collector.v2.ports import V2Ports

Shard = tuple[str, str]  # (account, Region)


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


# -- Connect --------------------------------------------------------------------------


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


# -- storage: records -------------------------------------------------------------------


@dataclass(slots=True)
class CompletedSlice:
    key: SliceKey
    pages: list[tuple[MetricSet, list[tuple[Dims, list[float | None]]]]]
    collected_at: datetime
    fence: tuple[str, str, int] | None = None  # (account, region, lease generation)

    @property
    def rows(self) -> int:
        return sum(len(rows) for _m, rows in self.pages)


@dataclass(slots=True)
class RunRecord:
    """One row of ``collection_runs``: a scheduled round or a one-off collection."""

    id: int
    requested_by: str
    profile: str
    range_start: datetime | None
    range_end: datetime | None
    instances: list[str]
    status: str
    slices_total: int = 0
    slices_done: int = 0
    slices_failed: int = 0
    rows_written: int = 0
    values_written: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    resumed_from: int | None = None
    owner: str | None = None  # the replica executing it (runs without parts)

    @classmethod
    def of(cls, row: dict[str, Any]) -> RunRecord:
        """From a row with at least the required columns (unknown columns are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class PartRecord:
    """One (account, Region) part of a one-off run in a cluster, with its run."""

    account: str
    region: str
    run: RunRecord

    @property
    def shard(self) -> Shard:
        return (self.account, self.region)


# -- storage: ports ---------------------------------------------------------------------


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


class Registry(Protocol):
    """Instances and queues the collector knows of."""

    async def instance_ref(self, instance_id: str, region: str = "", account: str | None = None) -> int: ...

    async def save_instance(
        self, instance_id: str, region: str, account: str | None, arn: str | None, alias: str | None
    ) -> int: ...

    async def save_queues(
        self, instance_id: str, region: str, account: str | None, queues: Sequence[QueueInfo]
    ) -> None: ...


class SchedulerStore(Protocol):
    """Frontiers, collected slices, revisits and gaps (see :mod:`collector.scheduler`)."""

    async def frontier(self, instance_id: str, profile: str, seconds: int) -> datetime | None: ...

    async def set_frontier(self, instance_id: str, profile: str, seconds: int, frontier: datetime) -> None: ...

    async def collected_starts(
        self, instance_id: str, profile: str, seconds: int, start: datetime, end: datetime
    ) -> set[datetime]: ...

    async def revisits_due(
        self, instance_id: str, profile: str, seconds: int, delays: list[int], now: datetime, oldest: datetime
    ) -> list[datetime]: ...

    async def next_revisit(
        self, instance_id: str, profile: str, seconds: int, delays: list[int], now: datetime, oldest: datetime
    ) -> datetime | None: ...

    async def record_gaps(
        self, instance_id: str, profile: str, seconds: int, starts: list[datetime], reason: str, now: datetime
    ) -> None: ...

    async def newest_collected(self, instance_id: str, profile: str, seconds: int) -> datetime | None: ...


class LeaseStore(Protocol):
    """Replica heartbeats and (account, Region) leases (see :mod:`collector.leases`)."""

    async def heartbeat(self, replica: str, api_url: str | None) -> None: ...

    async def ensure_shards(self, shards: Sequence[Shard]) -> None: ...

    async def live_replicas(self, ttl: float) -> int: ...

    async def renew_leases(self, replica: str, ttl: float) -> dict[Shard, int]: ...

    async def claim_leases(self, replica: str, ttl: float, n: int) -> dict[Shard, int]: ...

    async def release_leases(self, replica: str, shards: Sequence[Shard] | None) -> None: ...

    async def remove_replica(self, replica: str) -> None: ...


class RunStore(Protocol):
    """Runs and, in a cluster, their per-shard parts."""

    async def create_run(
        self, requested_by: str, profile: str, start: datetime | None, end: datetime | None,
        instances: list[str], slices: int,
    ) -> int: ...

    async def queue_run(
        self, requested_by: str, profile: str, start: datetime, end: datetime, instances: list[str]
    ) -> int: ...

    async def claim_queued_run(self) -> RunRecord | None:
        """The oldest queued one-off run without parts, now ``running``."""
        ...

    async def count_queued_runs(self) -> int: ...

    async def start_run(self, run_id: int, slices: int, instances: list[str]) -> None: ...

    async def finish_run(self, run_id: int, status: str, summary: RunSummary) -> None: ...

    async def get_run(self, run_id: int) -> RunRecord | None: ...

    async def list_runs(self, status: str | None, before: int | None, limit: int) -> list[RunRecord]: ...

    async def adopt_runs(self, replica: str, ttl: float, own: bool) -> list[RunRecord]:
        """Unfinished runs of replicas dead by the heartbeat table (and, with ``own``, of
        ``replica`` from before a restart), now ``interrupted``; each returned once."""
        ...

    async def set_resumed_from(self, run_id: int, old_run_id: int) -> None: ...

    async def add_run_parts(self, run_id: int, shards: Sequence[Shard]) -> None: ...

    async def claim_part(self, replica: str, owned: Sequence[Shard], ttl: float) -> PartRecord | None: ...

    async def part_started(self, run_id: int, shard: Shard, slices: int) -> None:
        """A part's attempt starts: counts of an earlier attempt leave the run's."""
        ...

    async def requeue_part(self, run_id: int, shard: Shard, replica: str, summary: RunSummary) -> None:
        """The part goes back to the queue for any replica (its calls stay counted)."""
        ...

    async def finish_part(self, run_id: int, shard: Shard, status: str, summary: RunSummary) -> str | None:
        """Ends the part; returns the run's final status once no part is left, else None."""
        ...


class Store(MetricSink, Registry, SchedulerStore, LeaseStore, RunStore, Protocol):
    """Everything the core keeps: what :class:`collector.adapters.postgres.PgStore` implements."""

    replica: str | None  # this process's replica id: fences its writes, owns the runs it starts

    async def prune(self, cutoff: datetime) -> list[str]: ...

    async def cluster_state(self) -> dict[str, Any]: ...

    async def ping(self) -> None: ...


@dataclass
class Runtime:
    """The ports plugged together for one process (built by :func:`collector.wiring.runtime`)."""

    settings: Settings
    store: Store
    source: ConnectSource
    limiters: Limiters
    clock: Clock
    pipeline: PipelineOptions  # the pipeline's options, resolved from ``settings`` once
    v2: V2Ports | None = None  # GetMetricDataV2's store and source (None: no V2 source plugged in)
