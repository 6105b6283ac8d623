"""In-memory fakes of the core's ports (collector.ports): a Store and a scripted
ConnectSource. They implement the same Protocols as PgStore and BotocoreConnect,
so unit tests of a room run in milliseconds with no Postgres and no simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.apis.current.model import CurrentPage, CurrentRequest, UserDataRequest, UserPage
from collector.apis.v1.model import Dims, MetricDataRequest
from collector.apis.v2.model import PageV2, V2Request
from collector.model import (
    AgentInfo,
    InstanceInfo,
    PartRecord,
    ProfileInfo,
    QueueInfo,
    ResourceInfo,
    RunRecord,
    RunSummary,
    Series,
    SeriesState,
    Shard,
    Target,
    WriteResult,
)
from collector.ports import CompletedSlice, ConnectSource, Store

SliceId = tuple[str, str, int, datetime]  # (instance, profile, seconds, start)


@dataclass
class Collected:
    rows: int
    run_id: int | None
    first_at: datetime
    last_at: datetime
    times: int = 1


@dataclass
class InMemoryStore:
    """A :class:`collector.ports.Store` in dicts. ``fail_writes`` raises the given errors
    from :meth:`write` one by one before writing; leases fence writes like Postgres does."""

    replica: str | None = None
    frontiers: dict[tuple[str, str, int], datetime] = field(default_factory=dict)
    collected: dict[SliceId, Collected] = field(default_factory=dict)
    gaps: dict[SliceId, str] = field(default_factory=dict)
    runs: dict[int, RunRecord] = field(default_factory=dict)
    parts: dict[tuple[int, str, str], str] = field(default_factory=dict)
    part_counts: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)  # total, done, rows, values
    serves: dict[str, set[Shard]] = field(default_factory=dict)
    part_holders: dict[tuple[int, str, str], str] = field(default_factory=dict)
    adopted: set[int] = field(default_factory=set)
    leases: dict[Shard, tuple[str | None, int]] = field(default_factory=dict)  # owner, generation
    replicas: set[str] = field(default_factory=set)
    instances: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    queues: dict[str, list[QueueInfo]] = field(default_factory=dict)
    profiles: dict[str, ProfileInfo] = field(default_factory=dict)
    instance_names: dict[str, str] = field(default_factory=dict)
    writes: list[list[CompletedSlice]] = field(default_factory=list)
    fail_writes: list[Exception] = field(default_factory=list)
    resources: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (instance, kind) -> IDs
    state_reads: int = 0  # series_state calls: one per planned round (and one after it)

    # -- MetricSink ---------------------------------------------------------------------------
    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> WriteResult:
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        # Like Postgres: only the slices whose shard's lease moved on are refused.
        fenced = tuple(
            (s.key, f"the lease of {s.fence[0]}/{s.fence[1]} moved on to another replica")
            for s in batch
            if s.fence is not None and self.leases.get((s.fence[0], s.fence[1])) != (self.replica, s.fence[2])
        )
        lost = {k for k, _r in fenced}
        batch = [s for s in batch if s.key not in lost]
        if batch:
            self.writes.append(list(batch))
        rows = values = 0
        for s in batch:
            k = s.key
            sid = (k.instance_id, k.profile, int((k.end - k.start).total_seconds()), k.start)
            old = self.collected.get(sid)
            if old is None:
                self.collected[sid] = Collected(s.rows, run_id, s.collected_at, s.collected_at)
            else:
                old.rows, old.run_id, old.last_at, old.times = s.rows, run_id, s.collected_at, old.times + 1
            rows += s.rows
            values += sum(len(v) for _m, page in s.pages for _d, v in page)
        if run_id is not None and run_id in self.runs:
            r = self.runs[run_id]
            r.slices_done += len(batch)
            r.rows_written += rows
            r.values_written += values
            for s in batch:
                if s.fence is not None and (c := self.part_counts.get((run_id, s.fence[0], s.fence[1]))):
                    c[1] += 1
                    c[2] += s.rows
                    c[3] += sum(len(v) for _m, page in s.pages for _d, v in page)
        return WriteResult(rows, values, fenced)

    # -- Registry -------------------------------------------------------------------------------
    async def instance_ref(self, instance_id: str, region: str = "", account: str | None = None) -> int:
        self.instances.setdefault(instance_id, (region, account))
        return list(self.instances).index(instance_id) + 1

    async def save_instance(
        self, instance_id: str, region: str, account: str | None, arn: str | None, alias: str | None
    ) -> int:
        self.instances[instance_id] = (region, account)
        return await self.instance_ref(instance_id)

    async def save_queues(
        self, instance_id: str, region: str, account: str | None, queues: Sequence[QueueInfo]
    ) -> None:
        self.queues[instance_id] = list(queues)

    async def register_profile(self, name: str, info: ProfileInfo) -> int:
        self.profiles[name] = info
        return list(self.profiles).index(name) + 1

    async def name_instance(self, instance_id: str, region: str, account: str | None, name: str) -> None:
        self.instances.setdefault(instance_id, (region, account))
        self.instance_names[instance_id] = name

    async def save_agents(
        self, instance_id: str, region: str, account: str | None, agents: Sequence[AgentInfo]
    ) -> None:
        self.resources[(instance_id, "agents")] = [a.id for a in agents]

    async def save_routing_profiles(
        self, instance_id: str, region: str, account: str | None, items: Sequence[ResourceInfo]
    ) -> None:
        self.resources[(instance_id, "routing_profiles")] = [r.id for r in items]

    async def save_hierarchy_groups(
        self, instance_id: str, region: str, account: str | None, items: Sequence[ResourceInfo]
    ) -> None:
        self.resources[(instance_id, "hierarchy_groups")] = [g.id for g in items]

    # -- SchedulerStore (as the series_state query) -------------------------------------------------
    def _series(self, ser: Series) -> dict[datetime, Collected]:
        lo, hi = ser.lengths
        return {s: c for (i, p, g, s), c in self.collected.items()
                if (i, p) == (ser.instance_id, ser.profile) and lo <= g <= hi}

    def _seconds(self, ser: Series, start: datetime) -> int:
        lo, hi = ser.lengths
        return next(g for (i, p, g, s) in self.collected
                    if (i, p, s) == (ser.instance_id, ser.profile, start) and lo <= g <= hi)

    async def series_state(
        self, series: Sequence[Series], since: Sequence[datetime], revisit_within: int
    ) -> list[SeriesState]:
        self.state_reads += 1
        out = []
        for ser, edge in zip(series, since, strict=True):
            frontier = self.frontiers.get((ser.instance_id, ser.profile, ser.seconds))
            mine = {s: (self._seconds(ser, s), c) for s, c in self._series(ser).items()}
            newest = max((s + timedelta(seconds=g) for s, (g, _c) in mine.items()), default=None)
            lower = frontier if frontier is not None else edge
            collected = {
                s: (g, c.last_at) for s, (g, c) in mine.items()
                if s >= min(lower, edge)
                and (s >= lower or c.last_at < s + timedelta(seconds=g + revisit_within))
            }
            out.append(SeriesState(frontier, newest, collected))
        return out

    async def set_frontiers(self, frontiers: Sequence[tuple[Series, datetime]]) -> None:
        for ser, f in frontiers:
            key = (ser.instance_id, ser.profile, ser.seconds)
            old = self.frontiers.get(key)
            self.frontiers[key] = f if old is None else max(old, f)  # GREATEST, as in SQL

    async def record_gaps(self, series: Series, starts: Sequence[datetime], reason: str, now: datetime) -> None:
        for s in starts:
            self.gaps.setdefault((series.instance_id, series.profile, series.seconds, s), reason)

    # -- LeaseStore (no expiry: leases move only when released or claimed from nobody) -------------
    async def heartbeat(self, replica: str, api_url: str | None, serves: Sequence[Shard] | None = None) -> None:
        self.replicas.add(replica)
        if serves is not None:
            self.serves[replica] = set(serves)

    async def shard_servers(self, ttl: float) -> dict[Shard, frozenset[str]]:
        wanted = {s for v in self.serves.values() for s in v if s in self.leases}
        return {s: frozenset(r for r, v in self.serves.items() if s in v and r in self.replicas) for s in wanted}

    async def ensure_shards(self, shards: Sequence[Shard]) -> None:
        for s in shards:
            self.leases.setdefault(s, (None, 0))

    async def live_replicas(self, ttl: float) -> int:
        return len(self.replicas)

    async def renew_leases(self, replica: str, ttl: float) -> dict[Shard, int]:
        return {s: g for s, (o, g) in self.leases.items() if o == replica}

    async def claim_leases(self, replica: str, ttl: float, n: int, serves: Sequence[Shard]) -> dict[Shard, int]:
        got: dict[Shard, int] = {}
        for s in sorted(self.leases):
            owner, gen = self.leases[s]
            if owner is None and len(got) < n and s in serves:
                self.leases[s] = (replica, gen + 1)
                got[s] = gen + 1
        return got

    async def release_leases(self, replica: str, shards: Sequence[Shard] | None) -> None:
        for s, (o, g) in list(self.leases.items()):
            if o == replica and (shards is None or s in shards):
                self.leases[s] = (None, g)

    async def remove_replica(self, replica: str) -> None:
        self.replicas.discard(replica)

    # -- RunStore -------------------------------------------------------------------------------
    def _new_run(self, requested_by: str, profile: str, start: datetime | None, end: datetime | None,
                 instances: list[str], status: str, slices: int = 0) -> int:
        run_id = len(self.runs) + 1
        self.runs[run_id] = RunRecord(run_id, requested_by, profile, start, end, list(instances), status,
                                      slices_total=slices, created_at=datetime.now(UTC), owner=self.replica)
        return run_id

    async def create_run(
        self, requested_by: str, profile: str, start: datetime | None, end: datetime | None,
        instances: list[str], slices: int,
    ) -> int:
        return self._new_run(requested_by, profile, start, end, instances, "running", slices)

    async def queue_run(
        self, requested_by: str, profile: str, start: datetime, end: datetime, instances: list[str]
    ) -> int:
        return self._new_run(requested_by, profile, start, end, instances, "queued")

    def _has_parts(self, run_id: int) -> bool:
        return any(r == run_id for r, _a, _g in self.parts)

    async def claim_queued_run(self) -> RunRecord | None:
        for r in self.runs.values():
            if r.status == "queued" and r.requested_by != "scheduler" and not self._has_parts(r.id):
                r.status, r.owner = "running", self.replica
                return dataclasses.replace(r)
        return None

    async def count_queued_runs(self) -> int:
        def waiting(r: RunRecord) -> bool:
            return r.status == "queued" or (r.status == "running" and any(
                st == "queued" for (i, _a, _g), st in self.parts.items() if i == r.id))

        return sum(1 for r in self.runs.values() if r.requested_by != "scheduler" and waiting(r))

    async def start_run(self, run_id: int, slices: int, instances: list[str]) -> None:
        r = self.runs[run_id]
        r.status, r.slices_total, r.instances = "running", slices, list(instances)

    async def finish_run(self, run_id: int, status: str, summary: RunSummary) -> None:
        r = self.runs[run_id]
        r.status, r.slices_failed = status, summary.slices_failed
        if summary.handed_over:
            r.slices_total = summary.slices_total
        r.requests, r.retries, r.throttles = summary.requests, summary.retries, summary.throttles
        r.errors = [{"slice": k, "reason": v} if k else {"reason": v} for k, v in summary.failures]

    async def get_run(self, run_id: int) -> RunRecord | None:
        r = self.runs.get(run_id)
        return dataclasses.replace(r) if r else None

    async def list_runs(self, status: str | None, before: int | None, limit: int) -> list[RunRecord]:
        rs = [r for i, r in sorted(self.runs.items(), reverse=True)
              if (status is None or r.status == status) and (before is None or i < before)]
        return rs[:limit]

    async def adopt_runs(self, replica: str, ttl: float, own: bool) -> list[RunRecord]:
        out = []
        for r in self.runs.values():
            mine = own if r.owner == replica else r.owner not in self.replicas
            if (r.status in ("queued", "running", "interrupted") and r.id not in self.adopted and mine
                    and r.requested_by in ("api", "resume", "scheduler") and not self._has_parts(r.id)):
                r.status = "interrupted"
                self.adopted.add(r.id)
                out.append(dataclasses.replace(r))
        return out

    async def set_resumed_from(self, run_id: int, old_run_id: int) -> None:
        self.runs[run_id].resumed_from = old_run_id

    async def add_run_parts(self, run_id: int, shards: Sequence[Shard]) -> None:
        for a, g in shards:
            self.parts.setdefault((run_id, a, g), "queued")

    async def claim_part(self, replica: str, owned: Sequence[Shard], ttl: float) -> PartRecord | None:
        for (run_id, a, g), st in sorted(self.parts.items()):
            if st == "queued" and (a, g) in owned:
                self.parts[(run_id, a, g)] = "running"
                self.part_holders[(run_id, a, g)] = replica
                return PartRecord(a, g, dataclasses.replace(self.runs[run_id]))
        return None

    async def part_started(self, run_id: int, shard: Shard, replica: str, slices: int) -> bool:
        if not self._holds(run_id, shard, replica):
            return False
        r = self.runs[run_id]
        old = self.part_counts.get((run_id, *shard), [0, 0, 0, 0])
        r.status = "running"
        r.slices_total += slices - old[0]
        r.slices_done -= old[1]
        r.rows_written -= old[2]
        r.values_written -= old[3]
        self.part_counts[(run_id, *shard)] = [slices, 0, 0, 0]
        return True

    def _holds(self, run_id: int, shard: Shard, replica: str) -> bool:
        key = (run_id, *shard)
        return self.parts.get(key) == "running" and self.part_holders.get(key) == replica

    async def requeue_part(self, run_id: int, shard: Shard, replica: str, summary: RunSummary) -> None:
        if self._holds(run_id, shard, replica):
            self.parts[(run_id, *shard)] = "queued"
            self.runs[run_id].requests += summary.requests

    async def finish_part(
        self, run_id: int, shard: Shard, replica: str, status: str, summary: RunSummary
    ) -> str | None:
        if not self._holds(run_id, shard, replica):
            return None
        self.parts[(run_id, *shard)] = status
        r = self.runs[run_id]
        r.slices_failed += summary.slices_failed
        r.requests += summary.requests
        if any(st in ("queued", "running") for (i, _a, _g), st in self.parts.items() if i == run_id):
            return None
        failed = any(st == "failed" for (i, _a, _g), st in self.parts.items() if i == run_id)
        r.status = "succeeded" if r.slices_failed == 0 and not failed else "partial" if r.slices_done else "failed"
        return r.status

    # -- the rest -------------------------------------------------------------------------------
    async def prune(self, cutoff: datetime | None, live_cutoff: datetime | None = None) -> list[str]:
        return []

    async def cluster_state(self, ttl: float) -> dict[str, Any]:
        return {"replicas": sorted(self.replicas), "unowned_shards": [], "unserved_shards": []}

    async def ping(self) -> None:
        return None

    async def live_changed_at(self) -> datetime | None:
        return None

    async def wallboard(self) -> dict[str, Any]:
        return {"queues": [], "agents": []}


Rows = list[tuple[Dims, list[float | None]]]


@dataclass
class ScriptedSource:
    """A :class:`collector.ports.ConnectSource` that answers from a script.

    ``pages`` maps an instance id to the pages GetMetricData returns in turn (each a list
    of (dims, values) rows), ``pages_v2`` to GetMetricDataV2's (a function of the request:
    the rows of each slice); ``failures`` are raised, one per call, before any page."""

    pages: dict[str, list[Rows]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    queues: dict[str, list[QueueInfo]] = field(default_factory=dict)
    instances: list[InstanceInfo] = field(default_factory=list)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)  # (operation, instance, token)
    pages_v2: Callable[[V2Request], PageV2] | None = None
    agents: dict[str, list[AgentInfo]] = field(default_factory=dict)
    routing_profiles: dict[str, list[ResourceInfo]] = field(default_factory=dict)
    hierarchy_groups: dict[str, list[ResourceInfo]] = field(default_factory=dict)
    requests_v2: list[V2Request] = field(default_factory=list)

    async def get_metric_data(
        self, target: Target, request: MetricDataRequest, next_token: str | None
    ) -> tuple[Rows, str | None]:
        self.calls.append(("GetMetricData", target.instance_id, next_token))
        if self.failures:
            raise self.failures.pop(0)
        pages = self.pages.get(target.instance_id, [[]])
        i = int(next_token or 0)
        nxt = str(i + 1) if i + 1 < len(pages) else None
        return pages[i], nxt

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]:
        self.calls.append(("ListQueues", target.instance_id, next_token))
        if self.failures:
            raise self.failures.pop(0)
        return self.queues.get(target.instance_id, []), None

    async def list_instances(self, target: Target, next_token: str | None) -> tuple[list[InstanceInfo], str | None]:
        self.calls.append(("ListInstances", target.account, next_token))
        if self.failures:
            raise self.failures.pop(0)
        return self.instances, None


    async def get_metric_data_v2(self, target: Target, request: V2Request, next_token: str | None) -> PageV2:
        self.calls.append(("GetMetricDataV2", target.instance_id, next_token))
        self.requests_v2.append(request)
        if self.failures:
            raise self.failures.pop(0)
        if self.pages_v2 is None:
            return PageV2(request.metrics, [])
        return self.pages_v2(request)

    async def get_current_metric_data(self, target: Target, request: CurrentRequest,
                                      next_token: str | None) -> CurrentPage:
        self.calls.append(("GetCurrentMetricData", target.instance_id, next_token))
        if self.failures:
            raise self.failures.pop(0)
        return CurrentPage(request.metrics, [], None, None)

    async def get_current_user_data(self, target: Target, request: UserDataRequest,
                                    next_token: str | None) -> UserPage:
        self.calls.append(("GetCurrentUserData", target.instance_id, next_token))
        if self.failures:
            raise self.failures.pop(0)
        return UserPage([], None)

    async def search_users(self, target: Target, next_token: str | None) -> tuple[list[AgentInfo], str | None]:
        self.calls.append(("SearchUsers", target.instance_id, next_token))
        return self.agents.get(target.instance_id, []), None

    async def list_routing_profiles(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]:
        self.calls.append(("ListRoutingProfiles", target.instance_id, next_token))
        return self.routing_profiles.get(target.instance_id, []), None

    async def list_user_hierarchy_groups(
        self, target: Target, next_token: str | None
    ) -> tuple[list[ResourceInfo], str | None]:
        self.calls.append(("ListUserHierarchyGroups", target.instance_id, next_token))
        return self.hierarchy_groups.get(target.instance_id, []), None


def _conforms(store: InMemoryStore, source: ScriptedSource) -> tuple[Store, ConnectSource]:
    """mypy checks here that the fakes implement the same Protocols as the adapters."""
    return store, source
