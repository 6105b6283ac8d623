"""The Protocols where the core meets what varies: the adapters (Connect, Postgres,
clocks) and the metric APIs (GetMetricData, GetMetricDataV2), and the records that
cross them.

The core (service, runs, fleet, scheduler, pipeline, leases) depends only on these.
:mod:`collector.adapters` implement the I/O ports, :mod:`collector.apis` the metric API
port (:class:`MetricApi`), and :mod:`collector.wiring` plugs them in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from collector.model import (
    AgentInfo,
    Fence,
    InstanceInfo,
    PartRecord,
    ProfileInfo,
    QueueInfo,
    ResourceInfo,
    RunRecord,
    RunSummary,
    ScheduleOptions,
    Series,
    SeriesState,
    Shard,
    SliceKey,
    Target,
    WriteResult,
)


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


# -- Connect --------------------------------------------------------------------------


class ConnectSource(Protocol):
    """Talks to Connect; raises the :mod:`collector.errors` API classes. The metric calls
    take an API's own request and return its own page shape (the API's fetch units know
    them); the listings return plain records and the next token."""

    async def get_metric_data(self, target: Target, request: Any, next_token: str | None) -> Any: ...

    async def get_metric_data_v2(self, target: Target, request: Any, next_token: str | None) -> Any: ...

    async def get_current_metric_data(self, target: Target, request: Any, next_token: str | None) -> Any: ...

    async def get_current_user_data(self, target: Target, request: Any, next_token: str | None) -> Any: ...

    async def list_instances(self, target: Target, next_token: str | None) -> tuple[list[InstanceInfo], str | None]: ...

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]: ...

    async def search_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]: ...

    async def list_routing_profiles(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]: ...

    async def list_user_hierarchy_groups(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]: ...


# -- the metric API port ------------------------------------------------------------------

# (queue, channel, routing profile, agent status, routing step expression, subtype,
#  validation test type, agent, the whole Dimensions map as JSON): a dimension set's columns
DimsColumns = tuple[str | None, str | None, str | None, str | None, str | None, str | None,
                    str | None, str | None, str | None]
# (name, statistic, unit, threshold value, api, threshold comparison, metric filters as JSON)
MemberRow = tuple[str, str | None, str, float | None, str, str | None, str | None]
Rows = Sequence[tuple[Hashable, list[float | None]]]  # (dimension group, values in metric order)


class StorageCodec(Protocol):
    """How an API's metric sets and dimension groups are keyed and described in the
    store's registries (keys are stable: existing databases keep their ids)."""

    def dims_key(self, dims: Any) -> str: ...

    def dims_columns(self, dims: Any) -> DimsColumns: ...

    def metric_set_signature(self, metrics: Any) -> str: ...

    def metric_set_members(self, metrics: Any) -> list[MemberRow]: ...

    @property
    def kind(self) -> str:
        """Where the store keeps the slice: ``interval`` (``metric_values``), ``current``
        (the latest queue snapshot and its history), ``agents`` (agent states)."""
        ...


@dataclass(slots=True)
class CompletedSlice:
    """One slice, whole: per metric set (an API's own, hashable), the rows of every
    dimension group; ``codec`` says how the store keys them."""

    key: SliceKey
    pages: list[tuple[Hashable, Rows]]
    collected_at: datetime
    fence: Fence | None = None
    codec: StorageCodec | None = None  # None only for a slice without pages
    taken_at: datetime | None = None  # a snapshot's instant (the API's DataSnapshotTime)
    on_stored: Callable[[], None] | None = None  # called once the slice is stored (live gauges)

    @property
    def rows(self) -> int:
        return sum(len(rows) for _m, rows in self.pages)


class FetchUnit(Protocol):
    """The smallest piece of fetch work of an API: every request of it, paged to the end
    through the one retry path (:func:`collector.fetch.fetch_unit`) under the limiter of
    (account, Region, ``operation``), then assembled into its slices, written together.
    A GetMetricData slice is one unit; a GetMetricDataV2 window of many slices is one."""

    @property
    def target(self) -> Target: ...

    @property
    def operation(self) -> str: ...

    @property
    def slice_keys(self) -> Sequence[SliceKey]: ...

    @property
    def requests(self) -> Sequence[Any]: ...

    @property
    def deadline(self) -> datetime | None:
        """When the unit can no longer be fetched (a live snapshot: the end of its period); a
        unit whose deadline passed before it started fails without a call. None: never."""
        ...

    def check(self, request: Any, now: datetime) -> None:
        """Raise :class:`collector.errors.PlanError` naming the first API limit it breaks."""
        ...

    async def page(self, source: ConnectSource, request: Any, token: str | None) -> tuple[Any, str | None]:
        """One page of ``request`` and the token of the next (None: the last)."""
        ...

    def assemble(self, pages: Sequence[Any], collected_at: datetime, fence: Fence | None) -> list[CompletedSlice]:
        """The unit's slices from every page of every request; raises MalformedResponse."""
        ...


class Calendar(Protocol):
    """A profile's slice boundaries: UTC multiples, or local wall-clock in a time zone."""

    @property
    def seconds(self) -> int:
        """The nominal slice length: the key of the profile's watermarks and gaps."""
        ...

    @property
    def lengths(self) -> tuple[int, int]:
        """The shortest and longest real slice (a local day is 23 to 25 hours)."""
        ...

    def floor(self, t: datetime) -> datetime:
        """The latest boundary at or before ``t``."""
        ...

    def next(self, boundary: datetime) -> datetime:
        """The boundary after ``boundary``."""
        ...


class MetricApi(Protocol):
    """One collection profile on its metric API: what the scheduler, runs and fleet need
    to know, and nothing they must branch on."""

    @property
    def profile(self) -> str: ...

    @property
    def calendar(self) -> Calendar: ...

    @property
    def info(self) -> ProfileInfo:
        """How the profile is described in the store's ``profiles`` table."""
        ...

    @property
    def lookback(self) -> int:
        """Seconds of history the API serves."""
        ...

    @property
    def initial_backfill(self) -> int | None:
        """How far back a never-collected instance starts (None: the scheduler's default)."""
        ...

    def schedule(self, opts: ScheduleOptions) -> ScheduleOptions:
        """The service's schedule as this API runs it (a live API: due at a period's start,
        never revisited, on its own loop)."""
        ...

    @property
    def needs(self) -> frozenset[str]:
        """Resource kinds to discover besides queues (``agents``, ``routing_profiles``,
        ``hierarchy_groups``)."""
        ...

    def check_range(self, start: datetime, end: datetime, now: datetime, margin: int) -> None:
        """Refuse a range the API cannot serve (:class:`collector.errors.PlanError` naming
        ``start`` or ``end``), before any call."""
        ...

    def plan(self, target: Target, start: datetime, end: datetime, now: datetime, margin: int) -> list[FetchUnit]:
        """The units that collect every slice of [start, end) of ``target``, in time order;
        raises PlanError when this target cannot be planned (its slices then fail)."""
        ...


# -- storage ports ----------------------------------------------------------------------


class MetricSink(Protocol):
    """Stores completed slices atomically: every slice of a batch whose lease is still held
    (or that has no lease), or none of them."""

    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> WriteResult: ...


class Registry(Protocol):
    """Instances, queues and the other resources the collector knows of (for joins)."""

    async def instance_ref(self, instance_id: str, region: str = "", account: str | None = None) -> int: ...

    async def save_instance(
        self, instance_id: str, region: str, account: str | None, arn: str | None, alias: str | None
    ) -> int: ...

    async def save_queues(
        self, instance_id: str, region: str, account: str | None, queues: Sequence[QueueInfo]
    ) -> None: ...

    async def register_profile(self, name: str, info: ProfileInfo) -> int:
        """Record a profile's API, interval and time zone (its id)."""
        ...

    async def name_instance(self, instance_id: str, region: str, account: str | None, name: str) -> None:
        """The name the config gives an instance (shown before its alias in the KPI views)."""
        ...

    async def save_agents(
        self, instance_id: str, region: str, account: str | None, agents: Sequence[AgentInfo]
    ) -> None: ...

    async def save_routing_profiles(
        self, instance_id: str, region: str, account: str | None, items: Sequence[ResourceInfo]
    ) -> None: ...

    async def save_hierarchy_groups(
        self, instance_id: str, region: str, account: str | None, items: Sequence[ResourceInfo]
    ) -> None: ...


class SchedulerStore(Protocol):
    """Frontiers, collected slices and gaps (see :mod:`collector.scheduler`), read for a
    whole round in one call."""

    async def series_state(
        self, series: Sequence[Series], since: Sequence[datetime], revisit_within: int
    ) -> list[SeriesState]:
        """Per series (in order): its frontier, its newest collected slice's end, and its
        collected slices that start at or after the frontier (``since`` where it has none),
        plus those from ``since`` on not collected again within ``revisit_within`` seconds
        of their end."""
        ...

    async def set_frontiers(self, frontiers: Sequence[tuple[Series, datetime]]) -> None:
        """Move frontiers forward (never back)."""
        ...

    async def record_gaps(self, series: Series, starts: Sequence[datetime], reason: str, now: datetime) -> None: ...


class LeaseStore(Protocol):
    """Replica heartbeats and (account, Region) leases (see :mod:`collector.leases`)."""

    async def heartbeat(self, replica: str, api_url: str | None, serves: Sequence[Shard] | None = None) -> None:
        """This replica is alive; ``serves``: the shards its config can serve (None: as before)."""
        ...

    async def ensure_shards(self, shards: Sequence[Shard]) -> None: ...

    async def live_replicas(self, ttl: float) -> int: ...

    async def renew_leases(self, replica: str, ttl: float) -> dict[Shard, int]: ...

    async def claim_leases(self, replica: str, ttl: float, n: int, serves: Sequence[Shard]) -> dict[Shard, int]:
        """Up to ``n`` free or expired leases, of ``serves`` only (what this config can serve)."""
        ...

    async def shard_servers(self, ttl: float) -> dict[Shard, frozenset[str]]:
        """Every shard a registered replica's config lists, and the live replicas whose
        config can serve it (empty: none can)."""
        ...

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

    async def count_queued_runs(self) -> int:
        """One-off runs waiting: queued, or (in a cluster) running with a part still queued."""
        ...

    async def start_run(self, run_id: int, slices: int, instances: list[str]) -> None: ...

    async def finish_run(self, run_id: int, status: str, summary: RunSummary) -> None: ...

    async def get_run(self, run_id: int) -> RunRecord | None: ...

    async def list_runs(self, status: str | None, before: int | None, limit: int) -> list[RunRecord]: ...

    async def adopt_runs(self, replica: str, ttl: float, own: bool) -> list[RunRecord]:
        """Unfinished runs a service started (requested by ``api``, ``resume`` or
        ``scheduler``; never a CLI-side run, e.g. ``collector sandbox``) of replicas dead by
        the heartbeat table (and, with ``own``, of ``replica`` from before a restart), now
        ``interrupted``; each returned once."""
        ...

    async def set_resumed_from(self, run_id: int, old_run_id: int) -> None: ...

    async def add_run_parts(self, run_id: int, shards: Sequence[Shard]) -> None: ...

    async def claim_part(self, replica: str, owned: Sequence[Shard], ttl: float) -> PartRecord | None: ...

    async def part_started(self, run_id: int, shard: Shard, replica: str, slices: int) -> bool:
        """A part's attempt starts: counts of an earlier attempt leave the run's. False (and
        nothing changes) when ``replica`` no longer holds the part."""
        ...

    async def requeue_part(self, run_id: int, shard: Shard, replica: str, summary: RunSummary) -> None:
        """The part goes back to the queue for any replica (its calls stay counted), if
        ``replica`` still holds it."""
        ...

    async def finish_part(
        self, run_id: int, shard: Shard, replica: str, status: str, summary: RunSummary
    ) -> str | None:
        """Ends the part if ``replica`` still holds it (claimed it, and it is running): the
        end of a part, and so of its run, is its current holder's alone. Returns the run's
        final status once no part is left, else None (also when the part is not held)."""
        ...


class Store(MetricSink, Registry, SchedulerStore, LeaseStore, RunStore, Protocol):
    """Everything the core keeps: what :class:`collector.adapters.postgres.PgStore` implements."""

    replica: str | None  # this process's replica id: fences its writes, owns the runs it starts

    async def prune(self, cutoff: datetime | None, live_cutoff: datetime | None = None) -> list[str]:
        """Drop what is older than ``cutoff`` (history) and ``live_cutoff`` (real-time history)."""
        ...

    async def cluster_state(self, ttl: float) -> dict[str, Any]: ...

    async def live_changed_at(self) -> datetime | None:
        """When the latest real-time snapshot tables last changed (None while empty)."""
        ...

    async def wallboard(self) -> dict[str, Any]:
        """The latest queue and agent snapshots with today's historical figures (``GET /wallboard/data``)."""
        ...

    async def ping(self) -> None: ...
