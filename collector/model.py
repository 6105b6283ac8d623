"""Plain data shared by every room (no I/O, no imports from the rest of the package)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Shard = tuple[str, str]  # (account, Region): the unit of rate limiting and of leases
Fence = tuple[str, str, int]  # (account, Region, lease generation) that a write carries
Resources = tuple[tuple[str, tuple[str, ...]], ...]  # (resource kind, IDs), e.g. ("agents", (...))


@dataclass(frozen=True, slots=True)
class Target:
    """One Connect instance to collect, with its queues and other resources resolved."""

    instance_id: str
    region: str
    account: str
    queues: tuple[str, ...]
    aws_profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = "connect-collector"
    lease: int | None = None  # the generation of this replica's lease on (account, region)
    unresolved: str | None = None  # why it cannot be collected now: its slices fail with this reason
    resources: Resources = ()  # discovered agents, routing profiles, hierarchy groups
    missing: tuple[tuple[str, str], ...] = ()  # (resource kind, why it could not be discovered)

    @property
    def limiter_key(self) -> Shard:
        return (self.account, self.region)

    @property
    def credentials_key(self) -> tuple[str | None, str | None, str | None, str]:
        return (self.aws_profile, self.role_arn, self.external_id, self.session_name)

    @property
    def fence(self) -> Fence | None:
        return None if self.lease is None else (self.account, self.region, self.lease)

    def resource(self, kind: str) -> tuple[str, ...] | None:
        """The discovered IDs of ``kind`` (None: not discovered)."""
        return next((ids for k, ids in self.resources if k == kind), None)


@dataclass(frozen=True, slots=True)
class SliceKey:
    profile: str
    instance_id: str
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.instance_id}@{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


@dataclass(slots=True)
class RunSummary:
    slices_total: int = 0
    slices_done: int = 0
    slices_failed: int = 0
    rows_written: int = 0
    values_written: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    handed_over: int = 0  # slices of shards handed to another replica mid-run (not in slices_total)
    fenced: int = 0  # slices refused at the write because their shard's lease had moved on


# -- what Connect lists -------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent: ListUsers gives id, ARN and username; SearchUsers also names, routing
    profile and hierarchy group (None where not read)."""

    id: str
    arn: str
    username: str
    first_name: str | None = None
    last_name: str | None = None
    routing_profile_id: str | None = None
    hierarchy_group_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """A routing profile (ListRoutingProfiles) or user hierarchy group (ListUserHierarchyGroups)."""

    id: str
    arn: str
    name: str


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What a profile's metric API says of it, recorded in ``profiles`` for SQL: the API
    (``v1``/``v2``), the interval as configured (``15m``, ``1d``), its nominal seconds, the
    API's own period name where it has one, and the time zone its slices align to."""

    api: str
    interval: str
    interval_seconds: int
    period: str | None
    time_zone: str


@dataclass(frozen=True)
class ScheduleOptions:
    """How the scheduler runs a profile: the service's ``[scheduler]``, as each metric API
    adapts it (:meth:`collector.ports.MetricApi.schedule`)."""

    settle: int = 900  # seconds after a slice's end before it is due (negative: before it ends)
    revisits: tuple[int, ...] = (3600,)
    initial_backfill: int = 24 * 3600
    catchup_batch: int = 16  # catch-up fetch units per instance and profile per round
    lookback_margin: int = 600
    retry_after: int = 30
    max_sleep: int = 300
    loop: str = "history"  # "history" or "live": profiles of one loop share its rounds; each loop runs on its own
    runs: bool = True  # its rounds are recorded in collection_runs


# -- what the store keeps -----------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Series:
    """The slices of one (instance, profile): what the scheduler keeps a frontier of.
    ``seconds`` is the nominal slice length (the key of its watermark); real slices are
    ``lengths[0]`` to ``lengths[1]`` seconds long (a local day is 23 to 25 hours)."""

    instance_id: str
    profile: str
    seconds: int
    lengths: tuple[int, int]


@dataclass(slots=True)
class SeriesState:
    """What the store knows of a :class:`Series`: its frontier, the end of its newest
    collected slice, and its collected slices from the frontier on and those still due
    for a revisit (start -> (length in seconds, last collected at))."""

    frontier: datetime | None = None
    newest: datetime | None = None
    collected: dict[datetime, tuple[int, datetime]] = field(default_factory=dict)
