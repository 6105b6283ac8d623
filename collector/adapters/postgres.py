"""PostgreSQL through asyncpg: migrations, the registry of ids, and the COPY writer.

:class:`PgStore` implements :class:`collector.ports.Store`. Driver and OS errors become
:class:`collector.errors.StorageError` at one boundary (:func:`_storage_errors`, applied
to every public method), so nothing above the adapter catches ``Exception``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
import structlog

from collector.adapters.kpi_rollup import (
    Layout,
    aggregate,
    contribution,
    rollup_rows,
    unique_groups,
)
from collector.errors import MigrationError, StorageError
from collector.model import (
    AgentInfo,
    PartRecord,
    ProfileInfo,
    QueueInfo,
    ResourceInfo,
    RunRecord,
    RunSummary,
    Series,
    SeriesState,
    Shard,
    SliceKey,
    WriteResult,
)
from collector.observability import DB_METER, TAKEOVERS
from collector.ports import Clock, CompletedSlice, StorageCodec
from collector.retry import RetryPolicy, retry
from collector.sqlfiles import check_versions, migrations, q

log = structlog.get_logger("collector.postgres")

SliceRef = tuple[int, datetime, int, int]  # (instance_ref, slice_start, slice_seconds, profile_id)


@dataclass(slots=True)
class Prepared:
    """A slice ready for the write transaction: its key columns and ``metric_values`` records."""

    slice: CompletedSlice
    ref: SliceRef
    records: list[Any]  # metric_values tuples, or AgentState records of an agents slice
    values: int


WALLBOARD_MAX_AGENTS = 2000  # agents a wallboard payload lists (the total is said)
WALLBOARD_TODAY_TTL = 30.0  # seconds today's figures per queue are reused (one read of today's slices)

MIGRATION_LOCK = 7_215_310_001  # pg_advisory_xact_lock key for migrations

# Driver and OS errors, the client-side ones included (a connection reset on release
# raises InternalClientError "cannot switch to state ..."): all mean "the database is away".
_PG_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    ConnectionError,
    TimeoutError,
)


P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")

# The run's last word is retried while the database is briefly away (a restart).
FINISH_RETRY = RetryPolicy(max_attempts=20, base=0.25, cap=1.0)


def _translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except _PG_ERRORS as e:
            raise StorageError(f"{type(e).__name__}: {e}") from None

    return wrapper


def _storage_errors(cls: type[C]) -> type[C]:
    """The one boundary: every public coroutine method raises only the project's errors."""
    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(fn):
            setattr(cls, name, _translated(fn))
    return cls


def _errors_of(summary: RunSummary) -> str:
    return orjson.dumps(
        [{"slice": k, "reason": r} if k else {"reason": r} for k, r in summary.failures]
    ).decode()


async def connect_pool(dsn: str, size: int = 4) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=120)
    except _PG_ERRORS as e:
        raise StorageError(f"cannot connect to the database: {type(e).__name__}: {e}") from None
    assert pool is not None
    return pool


@_translated
async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations in order, each in its own transaction; safe under races."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        check_versions([m.version for m in migrations()], done)  # none shipped, or DB newer
        for m in migrations():
            if m.version in done:
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            applied.append(m.version)
            log.info("migration_applied", version=m.version, name=m.name)
    return applied


@_translated
async def check_schema(conn: asyncpg.Connection) -> None:
    want = {m.version for m in migrations()}
    try:
        have = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        have = set()
    if want - have:
        raise MigrationError(
            f"migrations {sorted(want - have)} are not applied; run `collector migrate`"
        )


@_storage_errors
class PgStore:
    """Writer and registry over one asyncpg pool. Ids are cached once committed."""

    def __init__(self, pool: asyncpg.Pool, replica: str | None = None, clock: Clock | None = None) -> None:
        from collector.clock import SystemClock

        self.pool = pool
        self.clock: Clock = clock or SystemClock()
        self.replica = replica  # set when leases fence this replica's writes
        self._instances: dict[str, int] = {}
        self._profiles: dict[str, int] = {}
        # per codec (one per metric API): metric set -> id, dimension group -> id
        self._metric_sets: dict[StorageCodec, dict[Any, int]] = {}
        self._dims: dict[StorageCodec, dict[Any, int]] = {}
        self._partitions: set[date] = set()
        # the KPI roll-up's view of them (031): metric set -> layout, dimension group -> a queue group?
        self._kpi_layouts: dict[int, Layout | None] = {}
        self._queue_dims: dict[int, bool] = {}
        self._live_partitions: set[tuple[str, date]] = set()  # (current_values | agent_snapshots, day)
        self._live: dict[int, bool] = {}  # profile id -> a real-time profile (its gaps are ranges)
        # this process's clock -> the database's (newest-collection-wins), measured now and then
        self._offset: timedelta | None = None
        self._offset_at = 0.0
        # Test seam: awaited inside the write transaction at "slices_locked" (before the
        # leases are checked) and "fences_checked" (after): a writer stalled mid-write.
        self.pause_in_write: Callable[[str], Awaitable[None]] | None = None
        self._wallboard_today: tuple[float, list[dict[str, Any]]] = (-float("inf"), [])

    # -- registry ------------------------------------------------------------------
    async def instance_ref(self, instance_id: str, region: str = "", account: str | None = None) -> int:
        ref = self._instances.get(instance_id)
        if ref is None:
            ref = await self.pool.fetchval(q("upsert_instance"), instance_id, region, account)
            self._instances[instance_id] = ref
        return ref

    async def save_instance(
        self, instance_id: str, region: str, account: str | None, arn: str | None, alias: str | None
    ) -> int:
        ref: int = await self.pool.fetchval(q("save_instance"), instance_id, region, account, arn, alias)
        self._instances[instance_id] = ref
        return ref

    async def profile_id(self, name: str) -> int:
        pid = self._profiles.get(name)
        if pid is None:
            pid = await self.pool.fetchval(q("upsert_profile"), name)
            self._profiles[name] = pid
        return pid

    async def register_profile(self, name: str, info: ProfileInfo) -> int:
        """Record what defines the profile's slices. An edit (another interval, time zone or
        API under the same name) is said in the log: its slices are a new series (the
        scheduler matches slices by start and length), the old rows stay queryable and are
        no longer scheduled."""
        old = await self.pool.fetchrow(q("profile_registered"), name)
        pid: int = await self.pool.fetchval(q("register_profile"), name, info.api, info.interval,
                                            info.interval_seconds, info.period, info.time_zone)
        was = None if old is None or old["interval"] is None else (old["api"], old["interval"], old["time_zone"])
        if was is not None and was != (info.api, info.interval, info.time_zone):
            log.warning("profile_changed", profile=name, was=f"{was[0]} {was[1]} {was[2]}",
                        now=f"{info.api} {info.interval} {info.time_zone}",
                        effect="a new series of slices starts; the old rows stay queryable and are no longer scheduled")
        self._profiles[name] = pid
        return pid

    async def name_instance(self, instance_id: str, region: str, account: str | None, name: str) -> None:
        self._instances[instance_id] = await self.pool.fetchval(q("name_instance"), instance_id, region,
                                                                account, name)

    async def metric_set_id(self, codec: StorageCodec, ms: Any) -> int:
        cache = self._metric_sets.setdefault(codec, {})
        mid = cache.get(ms)
        if mid is not None:
            return mid
        sig = codec.metric_set_signature(ms)
        members = list(zip(*codec.metric_set_members(ms), strict=True))
        async with self.pool.acquire() as conn, conn.transaction():
            mid = await conn.fetchval(q("insert_metric_set"), sig)
            if mid is None:
                mid = await conn.fetchval(q("find_metric_set"), sig)
            await conn.execute(q("insert_metric_set_members"), mid, *[list(c) for c in members])
        cache[ms] = int(mid)
        return int(mid)

    async def dims_ids(self, codec: StorageCodec, dims: set[Any]) -> dict[Any, int]:
        cache = self._dims.setdefault(codec, {})
        missing = [d for d in dims if d not in cache]
        if missing:
            keys = [codec.dims_key(d) for d in missing]
            cols = list(zip(*[codec.dims_columns(d) for d in missing], strict=True))
            async with self.pool.acquire() as conn:
                await conn.execute(q("upsert_dimension_sets"), keys, *[list(c) for c in cols])
                found = {r["key"]: r["id"] for r in await conn.fetch(q("dimension_ids"), keys)}
            for d, k in zip(missing, keys, strict=True):
                cache[d] = found[k]
        return cache

    async def save_queues(self, instance_id: str, region: str, account: str | None, queues: Sequence[QueueInfo]) -> None:
        ref = await self.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q("upsert_queues"),
            ref,
            [x.id for x in queues],
            [x.arn for x in queues],
            [x.name for x in queues],
            [x.queue_type for x in queues],
        )

    async def save_agents(self, instance_id: str, region: str, account: str | None,
                          agents: Sequence[AgentInfo]) -> None:
        ref = await self.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q("upsert_agents"), ref, [a.id for a in agents], [a.arn for a in agents],
            [a.username for a in agents], [a.first_name for a in agents], [a.last_name for a in agents],
            [a.routing_profile_id for a in agents], [a.hierarchy_group_id for a in agents],
        )

    async def save_routing_profiles(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo]) -> None:
        ref = await self.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q("upsert_routing_profiles"), ref, [r.id for r in items], [r.arn for r in items],
            [r.name for r in items],
        )

    async def save_hierarchy_groups(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo], levels: Sequence[int | None] | None = None) -> None:
        ref = await self.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q("upsert_hierarchy_groups"), ref, [g.id for g in items], [g.arn for g in items],
            [g.name for g in items], list(levels) if levels is not None else [None] * len(items),
        )

    # -- runs ------------------------------------------------------------------------
    async def create_run(
        self, requested_by: str, profile: str, start: datetime | None, end: datetime | None,
        instances: list[str], slices: int,
    ) -> int:
        run_id: int = await self.pool.fetchval(
            q("create_run"), requested_by, profile, start, end, instances, slices, self.replica
        )
        return run_id

    async def finish_run(self, run_id: int, status: str, summary: RunSummary) -> None:
        """The run's last word; retried while the database is briefly away (a restart)."""
        try:
            await retry(
                lambda: self._finish_run(run_id, status, summary), operation="finish_run",
                policy=FINISH_RETRY, clock=self.clock, rng=random.Random(), meter=DB_METER,
            )
        except StorageError as e:
            raise StorageError(f"cannot record the end of run {run_id}: {e.detail}") from None

    @_translated
    async def _finish_run(self, run_id: int, status: str, s: RunSummary) -> None:
        await self.pool.execute(
            q("finish_run"), run_id, status, s.slices_failed, s.requests, s.retries, s.throttles, _errors_of(s),
            s.slices_total if s.handed_over else None,
        )

    # -- the writer ------------------------------------------------------------------
    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> WriteResult:
        """Every slice of the batch in one transaction (whatever its metric API): slice
        locks, fencing, newer-collection-wins, then COPY (new slices) or staging, delete
        stale and upsert (re-collected ones).

        Writers of one slice are serialised (transaction-scoped advisory locks per instance,
        profile and day, taken in a fixed order), and a slice whose stored collection is newer than this
        one is left alone, so the newest collection replaces older ones entirely. Slices
        whose shard lease moved on are refused (``WriteResult.fenced``); the lease rows are
        locked until commit, so a takeover cannot slip in between the check and the write.
        """
        try:
            return await self._write(batch, run_id)
        except asyncpg.CheckViolationError as e:
            if "no partition of relation" not in str(e):
                raise
            # Another replica's retention dropped a day partition this process had made (the
            # cache is per process): forget the batch's days and make them again. Rows older
            # than the retention are dropped again by the next prune, as on a single node.
            days = {s.key.start.astimezone(UTC).date() for s in batch}
            log.warning("partition_gone", days=sorted(d.isoformat() for d in days & self._partitions))
            self._partitions -= days
            self._live_partitions = {(t, d) for t, d in self._live_partitions if d not in days}
            return await self._write(batch, run_id)

    async def _write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> WriteResult:
        await self.ensure_partitions(batch)
        prepared = await self.prepare(batch)
        async with self.pool.acquire() as conn, conn.transaction():
            offset = await self._clock_offset(conn)
            await self._lock(conn, prepared)
            fenced = await self._fence(conn, prepared)
            lost = {k for k, _r in fenced}
            prepared = [p for p in prepared if p.slice.key not in lost]
            if self.pause_in_write is not None:
                await self.pause_in_write("fences_checked")
            stored = await self._stored(conn, prepared)
            prepared = _newest_wins(prepared, stored, offset)
            history = [p for p in prepared if _kind(p.slice) == "interval"]
            await self._store_values(conn, history, fresh=not any(p.ref in stored for p in history))
            await self._store_live(conn, [p for p in prepared if _kind(p.slice) != "interval"])
            await self._record(conn, batch, prepared, fenced, run_id, offset)
        return WriteResult(sum(len(p.records) for p in prepared), sum(p.values for p in prepared), tuple(fenced))

    async def prepare(self, batch: Sequence[CompletedSlice]) -> list[Prepared]:
        """The ``metric_values`` records of each slice, with its key columns and count of values."""
        groups: dict[StorageCodec, set[Any]] = {}  # new dimension groups: one upsert per batch
        for s in batch:
            if s.pages and _kind(s) != "agents":
                assert s.codec is not None, "a slice with pages names its codec"
                groups.setdefault(s.codec, set()).update(d for _ms, rows in s.pages for d, _v in rows)
        known = {codec: await self.dims_ids(codec, dims) for codec, dims in groups.items()}
        prepared: list[Prepared] = []
        for s in batch:
            k = s.key
            ref: SliceRef = (await self.instance_ref(k.instance_id), k.start, k.seconds,
                             await self.profile_id(k.profile))
            records: list[Any] = []
            values = 0
            if s.pages and _kind(s) == "agents":
                records = [a for _set, rows in s.pages for a, _v in rows]  # AgentState records
                values = len(records)
            elif s.pages and s.codec is not None:
                ids = known[s.codec]
                for ms, rows in s.pages:
                    mid = await self.metric_set_id(s.codec, ms)
                    for d, vals in rows:
                        records.append((k.start, ref[0], ids[d], mid, ref[2], ref[3], s.collected_at, vals))
                        values += len(vals)
            prepared.append(Prepared(s, ref, records, values))
        return prepared

    async def ensure_partitions(self, batch: Sequence[CompletedSlice]) -> None:
        """Create the day partitions the batch writes into (once per process and day)."""
        days = {s.key.start.astimezone(UTC).date() for s in batch if _kind(s) == "interval"} - self._partitions
        for day in sorted(days):
            with contextlib.suppress(asyncpg.DuplicateTableError):  # another writer made it just now
                await self.pool.execute(q("ensure_partition"), day)
            self._partitions.add(day)
        live = {(_LIVE_HISTORY[k], s.key.start.astimezone(UTC).date())
                for s in batch if (k := _kind(s)) != "interval"} - self._live_partitions
        for table, day in sorted(live):
            with contextlib.suppress(asyncpg.DuplicateTableError):
                await self.pool.execute(q("ensure_live_partition"), table, day)
            self._live_partitions.add((table, day))

    async def _store_live(self, conn: asyncpg.Connection, prepared: Sequence[Prepared]) -> None:
        """Snapshots: their history rows (again from scratch where a retried write stored
        them already), the latest snapshot of each (instance, profile) in place of the one
        before (unless a newer one is stored), agent state intervals and after-contact work intervals."""
        if not prepared:
            return
        cols = ([p.ref[0] for p in prepared], [p.ref[3] for p in prepared], [p.ref[1] for p in prepared])
        await conn.execute(q("delete_live_slices"), *cols)
        stale = {(r["instance_ref"], r["profile_id"], r["slice_start"])
                 for r in await conn.fetch(q("live_newer"), *cols)}
        fresh = sorted((p for p in prepared if (p.ref[0], p.ref[3], p.ref[1]) not in stale), key=lambda p: p.ref[1])
        latest = {(p.ref[0], p.ref[3]): p for p in fresh}  # the newest of each (instance, profile)
        current = [p for p in prepared if _kind(p.slice) == "current"]
        agents = [p for p in prepared if _kind(p.slice) == "agents"]
        if current:
            rows = [(r[0], _taken(p), r[6], r[1], r[2], r[3], r[5], r[7]) for p in current for r in p.records]
            if rows:
                await conn.copy_records_to_table("current_values", records=rows, columns=_CURRENT_COLUMNS)
            now = [p for p in latest.values() if _kind(p.slice) == "current"]
            await conn.execute(q("clear_current_latest"), [p.ref[0] for p in now], [p.ref[3] for p in now])
            rows = [(r[1], r[5], r[2], r[3], r[0], _taken(p), r[6], r[7]) for p in now for r in p.records]
            if rows:
                await conn.copy_records_to_table("current_latest", records=rows, columns=_LATEST_COLUMNS)
        if agents:
            await self._store_agents(conn, agents, [p for p in latest.values() if _kind(p.slice) == "agents"],
                                     [p for p in fresh if _kind(p.slice) == "agents"])

    async def _store_agents(self, conn: asyncpg.Connection, prepared: Sequence[Prepared],
                            latest: Sequence[Prepared], fresh: Sequence[Prepared]) -> None:
        rows = [(p.ref[1], _taken(p), p.ref[0], p.ref[3], a.agent_id, a.status, a.status_since,
                 a.routing_profile_id, a.hierarchy_group_id, a.next_status, a.contacts, a.slots)
                for p in prepared for a in p.records]
        if rows:
            await conn.copy_records_to_table("agent_snapshots", records=rows, columns=_AGENT_SNAPSHOT_COLUMNS)
        await conn.execute(q("clear_agent_latest"), [p.ref[0] for p in latest], [p.ref[3] for p in latest])
        latest_rows = [(p.ref[0], p.ref[3], a.agent_id, a.status, a.status_arn, a.status_since, a.routing_profile_id,
                 a.hierarchy_group_id, a.next_status, a.contacts, a.slots, p.ref[1], _taken(p))
                       for p in latest for a in p.records]
        if latest_rows:
            await conn.copy_records_to_table("agent_latest", records=latest_rows, columns=_AGENT_LATEST_COLUMNS)
        # State intervals follow every snapshot newer than the latest stored, oldest first.
        for p in fresh:
            iref, pid, snap = p.ref[0], p.ref[3], _taken(p)
            seen = [a for a in p.records if a.status_since is not None]
            if seen:
                n = len(seen)
                await conn.execute(q("close_superseded_states"), [iref] * n, [pid] * n,
                                   [a.agent_id for a in seen], [a.status_since for a in seen])
                await conn.execute(q("upsert_states"), [iref] * n, [pid] * n, [a.agent_id for a in seen],
                                   [a.status_since for a in seen], [a.status for a in seen], [snap] * n)
            await conn.execute(q("close_absent_states"), [iref], [pid], [snap], 2 * p.ref[2])
            acw = [(a.agent_id, *w) for a in p.records for w in a.acw]
            if acw:
                n = len(acw)
                await conn.execute(q("upsert_acw"), [iref] * n, [pid] * n, *map(list, zip(*acw, strict=True)),
                                   [snap] * n)
            await conn.execute(q("close_absent_acw"), [iref], [pid], [snap], 2 * p.ref[2])

    async def _clock_offset(self, conn: asyncpg.Connection) -> timedelta:
        """The database's clock minus this process's (the clock that stamps collections),
        from one round trip (its midpoint), measured again every minute. Newest-collection-wins
        compares collections on the database's clock, so a writer whose clock is off by
        an hour neither wins nor loses against the others for it."""
        mono = self.clock.monotonic()
        if self._offset is None or mono - self._offset_at >= 60:
            before = self.clock.now()
            db: datetime = await conn.fetchval(q("database_clock"))
            after = self.clock.now()
            self._offset, self._offset_at = db - (before + (after - before) / 2), mono
        return self._offset

    async def _lock(self, conn: asyncpg.Connection, prepared: Sequence[Prepared]) -> None:
        """One writer of a slice at a time (locks per instance/profile/day); a fixed lock
        order avoids deadlocks."""
        await conn.execute(q("lock_slices"), sorted({_slice_lock(*p.ref) for p in prepared}))
        if self.pause_in_write is not None:
            await self.pause_in_write("slices_locked")

    async def _fence(self, conn: asyncpg.Connection, prepared: Sequence[Prepared]) -> list[tuple[SliceKey, str]]:
        """The slices whose shard's lease moved on. The lease rows stay locked (FOR SHARE)
        until commit, so no takeover can commit between this check and the write."""
        fences = {p.slice.fence for p in prepared if p.slice.fence is not None}
        if not fences:
            return []
        held = {
            (r["account"], r["region"], r["generation"])
            for r in await conn.fetch(q("lock_fences"), self.replica, [f[0] for f in fences],
                                      [f[1] for f in fences], [f[2] for f in fences])
        }
        return [
            (p.slice.key, f"the lease of {f[0]}/{f[1]} (generation {f[2]}) moved on to another replica")
            for p in prepared if (f := p.slice.fence) is not None and f not in held
        ]

    async def _stored(self, conn: asyncpg.Connection, prepared: Sequence[Prepared]) -> dict[SliceRef, datetime]:
        """When each slice that is stored already was last collected."""
        if not prepared:
            return {}
        rows = await conn.fetch(q("collected_at_of"), *_slice_columns(p.ref for p in prepared))
        return {(r["instance_ref"], r["slice_start"], r["slice_seconds"], r["profile_id"]): r["ordered_at"]
                for r in rows}

    async def _store_values(self, conn: asyncpg.Connection, prepared: Sequence[Prepared], fresh: bool) -> None:
        """Slices never collected before (a backfill, the first collection of a new slice)
        have no rows to replace: COPY them straight into place. Otherwise stage, delete
        what the new collection no longer has, and upsert. The KPI roll-up
        (``kpi_queue_rollup``) follows in the same transaction: new slices' contribution
        added; for re-collected ones, the (slice, group) pairs whose rows change have their
        old contribution subtracted before the rows are replaced and the new one added after."""
        records = [r for p in prepared for r in p.records]
        keys = _slice_columns(p.ref for p in prepared)
        if fresh and records:
            # the roll-up's sums are worked out in a thread while the database takes the COPY
            rollup = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(_rollup_rows, prepared, records, *await self._rollup_inputs(conn, prepared,
                                                                                                    records)))
            try:
                async with conn.transaction():  # a savepoint: fall back to the upsert
                    await conn.copy_records_to_table("metric_values", records=records, columns=_COLUMNS)
            except asyncpg.UniqueViolationError:
                await rollup
            else:
                rows, sls = await rollup
                if rows[0]:
                    await conn.execute(q("kpi_rollup_upsert"), *rows, *sls)
                return
        if prepared:
            await conn.execute(q("create_staging"))
            if records:
                await conn.copy_records_to_table("staging_values", records=records, columns=_COLUMNS)
            # the KPI roll-up: the changed groups' stored contribution out, the new one in (031)
            await conn.execute(q("kpi_rollup_before"), *keys)
            await conn.execute(q("delete_stale"), *keys)
            await conn.execute(q("upsert_values"))
            await conn.execute(q("kpi_rollup_after"))

    async def _rollup_inputs(self, conn: asyncpg.Connection, prepared: Sequence[Prepared], records: list[Any]
                             ) -> tuple[dict[int, Layout], dict[int, bool], dict[tuple[datetime, int], date]]:
        """What new slices' contribution to the KPI roll-up (031) is computed from: the
        metric sets' layouts, which groups are queue groups, the slices' local days (read
        under a share lock on their profiles: a time-zone edit waits for this transaction)."""
        mids = {r[3] for r in records} - self._kpi_layouts.keys()
        if mids:
            found = {r["metric_set_id"]: Layout.of(r) for r in await conn.fetch(q("kpi_layouts"), list(mids))}
            self._kpi_layouts.update({m: found.get(m) for m in mids})
        dims = {r[2] for r in records} - self._queue_dims.keys()
        if dims:
            self._queue_dims.update({r["id"]: r["queue"] for r in await conn.fetch(q("queue_dims"), list(dims))})
        days = {(r["st"], r["pid"]): r["local_date"]
                for r in await conn.fetch(q("kpi_rollup_days"), [p.ref[1] for p in prepared],
                                          [p.ref[3] for p in prepared])}
        layouts = {m: lay for m, lay in self._kpi_layouts.items() if lay is not None}
        return layouts, dict(self._queue_dims), days

    async def _record(
        self, conn: asyncpg.Connection, batch: Sequence[CompletedSlice], prepared: Sequence[Prepared],
        fenced: Sequence[tuple[SliceKey, str]], run_id: int | None, offset: timedelta,
    ) -> None:
        """The collected slices, and the run's (and its parts') progress."""
        if prepared:
            await conn.execute(
                q("record_slices"), *_slice_columns(p.ref for p in prepared),
                [p.slice.rows for p in prepared], [run_id] * len(prepared), [p.slice.collected_at for p in prepared],
                [p.slice.collected_at + offset for p in prepared],
            )
        done = len(batch) - len(fenced)
        if run_id is not None and done:
            await conn.execute(q("run_progress"), run_id, done, sum(len(p.records) for p in prepared),
                               sum(p.values for p in prepared))
            await _part_progress(conn, run_id, batch, fenced, prepared)

    # -- scheduler state ---------------------------------------------------------------
    async def _series_refs(self, series: Sequence[Series]) -> tuple[list[int], list[int]]:
        return ([await self.instance_ref(x.instance_id) for x in series],
                [await self.profile_id(x.profile) for x in series])

    async def series_state(
        self, series: Sequence[Series], since: Sequence[datetime], revisit_within: int
    ) -> list[SeriesState]:
        if not series:
            return []
        irefs, pids = await self._series_refs(series)
        rows = await self.pool.fetch(
            q("series_state"), irefs, pids, [x.seconds for x in series], [x.lengths[0] for x in series],
            [x.lengths[1] for x in series], list(since), revisit_within,
        )
        out = [SeriesState() for _ in series]
        for r in rows:
            st = out[r["ord"] - 1]
            st.frontier, st.newest = r["frontier"], r["newest"]
            st.collected = dict(zip(r["starts"] or (), zip(r["secs"] or (), r["lasts"] or (), strict=True),
                                    strict=True))
        return out

    async def set_frontiers(self, frontiers: Sequence[tuple[Series, datetime]]) -> None:
        if not frontiers:
            return
        irefs, pids = await self._series_refs([x for x, _f in frontiers])
        await self.pool.execute(q("set_frontiers"), irefs, pids, [x.seconds for x, _f in frontiers],
                                [f for _x, f in frontiers])

    async def record_gaps(self, series: Series, starts: Sequence[datetime], reason: str, now: datetime) -> None:
        """One row per lost slice; a live profile's lost periods as one row per contiguous
        range (merged with the rows of the same reason it overlaps or touches), so a week's
        stop is one row, not 40,000."""
        iref, pid = await self.instance_ref(series.instance_id), await self.profile_id(series.profile)
        if not starts:
            return
        live = self._live.get(pid)
        if live is None:
            live = self._live[pid] = bool(await self.pool.fetchval(q("profile_is_live"), pid))
        if not live:
            await self.pool.execute(q("record_gaps"), iref, pid, series.seconds, reason, now, list(starts))
            return
        step = timedelta(seconds=series.seconds)
        spans = [(s, s + step) for s in sorted(set(starts))]
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetch(q("take_touching_live_gaps"), iref, pid, reason, spans[0][0], spans[-1][1])
            spans += [(r["slice_start"], r["slice_start"] + timedelta(seconds=r["slice_seconds"])) for r in old]
            merged = _merge_spans(spans)
            await conn.execute(q("record_gap_ranges"), iref, pid, reason, now, [a for a, _b in merged],
                               [int((b - a).total_seconds()) for a, b in merged])

    async def set_resumed_from(self, run_id: int, old_run_id: int) -> None:
        await self.pool.execute(q("set_resumed_from"), run_id, old_run_id)

    # -- runs for the HTTP API -----------------------------------------------------------
    async def queue_run(
        self, requested_by: str, profile: str, start: datetime, end: datetime, instances: list[str]
    ) -> int:
        run_id: int = await self.pool.fetchval(
            q("queue_run"), requested_by, profile, start, end, instances, self.replica
        )
        return run_id

    async def start_run(self, run_id: int, slices: int, instances: list[str]) -> None:
        await self.pool.execute(q("start_run"), run_id, slices, instances)

    async def get_run(self, run_id: int) -> RunRecord | None:
        row = await self.pool.fetchrow(q("get_run"), run_id)
        return _run(row) if row else None

    async def list_runs(self, status: str | None, before: int | None, limit: int) -> list[RunRecord]:
        rows = await self.pool.fetch(q("list_runs"), status, before, limit)
        return [_run(r) for r in rows]

    async def adopt_runs(self, replica: str, ttl: float, own: bool) -> list[RunRecord]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("adopt_runs"), replica, ttl, own)
            if own:
                await conn.execute(q("requeue_own_parts"), replica)
        return sorted((_run(r) for r in rows), key=lambda r: r.id)

    async def claim_queued_run(self) -> RunRecord | None:
        row = await self.pool.fetchrow(q("claim_queued_run"), self.replica)
        return _run(row) if row else None

    async def count_queued_runs(self) -> int:
        return int(await self.pool.fetchval(q("count_queued_runs")))

    async def prune(self, cutoff: datetime | None, live_cutoff: datetime | None = None) -> list[str]:
        """Retention: drop the day partitions wholly before ``cutoff`` (no row deletes), and
        the real-time history's before ``live_cutoff``."""
        dropped: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if cutoff is not None:
                dropped += [r["dropped"] for r in await conn.fetch(q("drop_partitions_before"), cutoff)]
                await conn.execute(q("prune_bookkeeping"), cutoff)
            if live_cutoff is not None:
                dropped += [r["dropped"] for r in await conn.fetch(q("drop_live_partitions_before"), live_cutoff)]
                await conn.execute(q("prune_live_bookkeeping"), live_cutoff)
        self._partitions = {d for d in self._partitions if f"metric_values_{d:%Y%m%d}" not in dropped}
        self._live_partitions = {(t, d) for t, d in self._live_partitions if f"{t}_{d:%Y%m%d}" not in dropped}
        return dropped

    # -- leases (scale-out) -------------------------------------------------------------
    async def heartbeat(self, replica: str, api_url: str | None, serves: Sequence[Shard] | None = None) -> None:
        names = None if serves is None else [f"{a}/{r}" for a, r in serves]
        await self.pool.execute(q("heartbeat"), replica, api_url, names)

    async def ensure_shards(self, shards: Sequence[tuple[str, str]]) -> None:
        await self.pool.execute(q("ensure_shards"), [a for a, _r in shards], [r for _a, r in shards])

    async def live_replicas(self, ttl: float) -> int:
        return int(await self.pool.fetchval(q("live_replicas"), ttl))

    async def renew_leases(self, replica: str, ttl: float) -> dict[tuple[str, str], int]:
        rows = await self.pool.fetch(q("renew_leases"), replica, ttl)
        return {(r["account"], r["region"]): r["generation"] for r in rows}

    async def claim_leases(
        self, replica: str, ttl: float, n: int, serves: Sequence[Shard]
    ) -> dict[tuple[str, str], int]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("claim_leases"), replica, ttl, n, [f"{a}/{r}" for a, r in serves])
        TAKEOVERS.inc(sum(1 for r in rows if r["takeover"]))  # claimed from a replica that had not released it
        return {(r["account"], r["region"]): r["generation"] for r in rows}

    async def release_leases(self, replica: str, shards: Sequence[tuple[str, str]] | None) -> None:
        names = None if shards is None else [f"{a}/{r}" for a, r in shards]
        await self.pool.execute(q("release_leases"), replica, names)

    async def remove_replica(self, replica: str) -> None:
        await self.pool.execute(q("remove_replica"), replica)

    async def add_run_parts(self, run_id: int, shards: Sequence[tuple[str, str]]) -> None:
        await self.pool.execute(q("add_run_parts"), run_id, [a for a, _r in shards], [r for _a, r in shards])

    async def claim_part(self, replica: str, owned: Sequence[Shard], ttl: float) -> PartRecord | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("requeue_orphan_parts"), ttl)
            part = await conn.fetchrow(q("claim_part"), replica, [f"{a}/{r}" for a, r in owned])
            if part is None:
                return None
            run = await conn.fetchrow(q("get_run"), part["run_id"])
        return PartRecord(part["account"], part["region"], _run(run))

    async def part_started(self, run_id: int, shard: Shard, replica: str, slices: int) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(q("part_counts"), run_id, *shard, replica)
            if old is None:  # taken over (or ended) since it was claimed: not ours to start
                return False
            await conn.execute(q("part_reset"), run_id, *shard, slices)
            await conn.execute(q("part_started"), run_id, slices, *old)
        return True

    async def requeue_part(self, run_id: int, shard: Shard, replica: str, summary: RunSummary) -> None:
        s = summary
        await self.pool.execute(q("requeue_part"), run_id, shard[0], shard[1], replica,
                                s.requests, s.retries, s.throttles)

    async def finish_part(
        self, run_id: int, shard: Shard, replica: str, status: str, summary: RunSummary
    ) -> str | None:
        s = summary
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchval(q("finish_part"), run_id, shard[0], shard[1], status, s.slices_failed,
                                       s.requests, s.retries, s.throttles, _errors_of(s), replica)
            if held is None:  # another replica holds the part now: its end is that one's to decide
                log.warning("part_not_held", run_id=run_id, shard=f"{shard[0]}/{shard[1]}", replica=replica)
                return None
            final: str | None = await conn.fetchval(q("settle_run"), run_id)
        return final

    async def shard_servers(self, ttl: float) -> dict[Shard, frozenset[str]]:
        return {(r["account"], r["region"]): frozenset(r["live"])
                for r in await self.pool.fetch(q("shard_servers"), ttl)}

    async def cluster_state(self, ttl: float) -> dict[str, Any]:
        rows = await self.pool.fetch(q("cluster_state"))
        free = await self.pool.fetch(q("unowned_shards"))
        servers = await self.pool.fetch(q("shard_servers"), ttl)
        return {
            "replicas": [
                {**{k: r[k] for k in ("id", "api_url", "started_at")},
                 "heartbeat_age": float(r["heartbeat_age"]), "shards": orjson.loads(r["shards"])}
                for r in rows
            ],
            "unowned_shards": [{"account": f["account"], "region": f["region"]} for f in free],
            "unserved_shards": [{"account": u["account"], "region": u["region"]} for u in servers if not u["live"]],
        }

    # -- the live wallboard -----------------------------------------------------------
    async def live_changed_at(self) -> datetime | None:
        """The newest write or snapshot in the latest-snapshot tables (None while empty):
        one small read, polled every second while a wallboard is open."""
        changed: datetime | None = await self.pool.fetchval(q("live_changed_at"))
        return changed

    async def wallboard(self, max_agents: int = WALLBOARD_MAX_AGENTS) -> dict[str, Any]:
        """What ``GET /wallboard/data`` answers: every queue row of the latest snapshots
        with today's figures from the historical data, and the agents (at most ``max_agents``)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            now = await conn.fetchval("SELECT now()")  # one snapshot of the database: changed_at matches
            changed = await conn.fetchval(q("live_changed_at"))
            queues = await conn.fetch(q("wallboard_queues"))
            agents = await conn.fetch(q("wallboard_agents"), max_agents)
            looked, today = self._wallboard_today
            if time.monotonic() - looked >= WALLBOARD_TODAY_TTL:  # the historical data moves slowly
                today = [dict(r) for r in await conn.fetch(q("wallboard_today"))]
                self._wallboard_today = (time.monotonic(), today)
        return wallboard_payload(now, changed, [dict(r) for r in queues], [dict(r) for r in agents], today)

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await check_schema(conn)


async def _part_progress(
    conn: asyncpg.Connection, run_id: int, batch: Sequence[CompletedSlice], fenced: Sequence[tuple[SliceKey, str]],
    prepared: Sequence[Prepared],
) -> None:
    """Counts per shard for the run's parts (runs without parts match no row)."""
    lost = {k for k, _r in fenced}
    per: dict[tuple[str, str], list[int]] = {}
    for s in batch:
        if s.fence is not None and s.key not in lost:
            per.setdefault((s.fence[0], s.fence[1]), [0, 0, 0])[0] += 1
    for p in prepared:
        if (f := p.slice.fence) is not None:
            c = per.setdefault((f[0], f[1]), [0, 0, 0])
            c[1] += len(p.records)
            c[2] += p.values
    if per:
        shards = list(per)
        await conn.execute(q("part_progress"), run_id, [a for a, _r in shards], [r for _a, r in shards],
                           *[[per[k][i] for k in shards] for i in range(3)])


_COLUMNS = ["slice_start", "instance_ref", "dims_id", "metric_set_id", "slice_seconds", "profile_id",
            "collected_at", "vals"]
_CURRENT_COLUMNS = ["slice_start", "snapshot_at", "collected_at", "instance_ref", "dims_id", "metric_set_id",
                    "profile_id", "vals"]
_LATEST_COLUMNS = ["instance_ref", "profile_id", "dims_id", "metric_set_id", "slice_start", "snapshot_at",
                   "collected_at", "vals"]
_AGENT_SNAPSHOT_COLUMNS = ["slice_start", "snapshot_at", "instance_ref", "profile_id", "agent_id", "status",
                           "status_since", "routing_profile_id", "hierarchy_group_id", "next_status", "contacts",
                           "slots"]
_AGENT_LATEST_COLUMNS = ["instance_ref", "profile_id", "agent_id", "status", "status_arn", "status_since",
                         "routing_profile_id", "hierarchy_group_id", "next_status", "contacts", "slots",
                         "slice_start", "snapshot_at"]
_LIVE_HISTORY = {"current": "current_values", "agents": "agent_snapshots"}


def _kind(s: CompletedSlice) -> str:
    """Where the store keeps a slice (its codec's kind; a slice without one: metric_values)."""
    return "interval" if s.codec is None else s.codec.kind


def _taken(p: Prepared) -> datetime:
    return p.slice.taken_at or p.slice.collected_at


def _newest_wins(prepared: list[Prepared], stored: Mapping[SliceRef, datetime], offset: timedelta) -> list[Prepared]:
    """A slice already stored from a newer collection (on the database's clock) is left as it is."""
    newer = {p.ref for p in prepared if p.ref in stored and stored[p.ref] > p.slice.collected_at + offset}
    if newer:
        log.info("slices_superseded", slices=len(newer))
    return [p for p in prepared if p.ref not in newer]


def _merge_spans(spans: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching spans as one each."""
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _slice_lock(iref: int, start: datetime, secs: int, pid: int) -> int:
    """The advisory lock key that serialises writers of a slice: a stable signed 64-bit hash
    of its instance, profile, length and UTC day. One lock per day, not per slice, keeps a
    backfill batch of thousands of small slices inside Postgres' lock table."""
    raw = f"{iref}/{pid}/{secs}/{start.astimezone(UTC).date().isoformat()}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _rollup_rows(prepared: Sequence[Prepared], records: list[Any], layouts: Mapping[int, Layout],
                 queue_dims: Mapping[int, bool], days: Mapping[tuple[datetime, int], date]
                 ) -> tuple[list[list[Any]], list[list[Any]]]:
    """The KPI roll-up rows new slices add (kpi_rollup_upsert's arrays)."""
    rows, sls = rollup_rows(((p.ref[0], p.ref[3], p.ref[1], p.ref[2], p.records) for p in prepared),
                            layouts, queue_dims, days)
    if not unique_groups(rows, sls):  # a group in two differently laid out slices: row by row
        rows, sls = aggregate(*contribution(records, layouts, queue_dims, days))
    return rows, sls


def _slice_columns(keys: Any) -> tuple[list[int], list[datetime], list[int], list[int]]:
    cols: tuple[list[int], list[datetime], list[int], list[int]] = ([], [], [], [])
    for iref, start, secs, pid in keys:
        cols[0].append(iref)
        cols[1].append(start)
        cols[2].append(secs)
        cols[3].append(pid)
    return cols


def _run(row: Any) -> RunRecord:
    d = dict(row)
    if isinstance(d.get("errors"), str):
        d["errors"] = orjson.loads(d["errors"])
    d["instances"] = list(d.get("instances") or [])
    return RunRecord.of(d)



_QUEUE_FIELDS = ("instance_id", "instance_name", "profile", "queue_id", "queue_name", "channel",
                 "routing_profile_id", "routing_profile_name", "snapshot_at", "contacts_in_queue",
                 "oldest_contact_age", "agents_available", "agents_on_contact", "agents_after_contact_work",
                 "agents_online", "agents_staffed", "agents_non_productive", "estimated_wait_time")
_AGENT_FIELDS = ("instance_id", "instance_name", "profile", "agent_id", "agent_name", "status", "status_since",
                 "routing_profile_name", "hierarchy_group_name", "contacts", "contact_states", "next_status",
                 "snapshot_at")


def _threshold_order(key: str) -> tuple[float, int]:
    """"20" before "<=20" before "60": by seconds, "less than" first."""
    lte = key.startswith("<=")
    try:
        return float(key.removeprefix("<=")), int(lte)
    except ValueError:
        return float("inf"), int(lte)


def _json(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, str | bytes) else v


def _today_of(row: dict[str, Any], scope: str) -> dict[str, Any]:
    sl = row["service_level"]
    levels: dict[str, float | None] = dict(_json(sl) or {})
    levels = {k: levels[k] for k in sorted(levels, key=_threshold_order)}
    primary = next(((k, v) for k, v in levels.items() if v is not None), None)
    return {
        "profile": row["profile"], "time_zone": row["time_zone"], "date": row["local_date"].isoformat(),
        "through": row["through"], "scope": scope,
        "contacts_handled": row["contacts_handled"], "contacts_queued": row["contacts_queued"],
        "contacts_abandoned": row["contacts_abandoned"], "service_level": levels,
        "service_level_threshold": primary[0] if primary else None,
        "service_level_pct": primary[1] if primary else None,
    }


def wallboard_payload(now: datetime, changed: datetime | None, queues: list[dict[str, Any]],
                      agents: list[dict[str, Any]], today: list[dict[str, Any]]) -> dict[str, Any]:
    """The wallboard's JSON. Each live queue row (instance, queue, channel, routing profile)
    gets today's figures from one historical profile: per (instance, queue) the profile whose
    data reaches furthest into today (ties: the name), for the row's channel where that
    profile is grouped by channel, else over all the queue's channels (``scope``)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in today:
        if r["all_channels"]:
            key = (r["instance_id"], r["queue_id"])
            held = best.get(key)
            if held is None or (r["through"], held["profile"]) > (held["through"], r["profile"]):
                best[key] = r
    per_channel = {(r["instance_id"], r["queue_id"], r["profile"], r["channel"]): r
                   for r in today if not r["all_channels"] and r["channel"] is not None}
    out_queues = []
    for q_ in queues:
        row = {k: q_.get(k) for k in _QUEUE_FIELDS}
        total = best.get((q_["instance_id"], q_["queue_id"]))
        figures = None
        if total is not None:
            ch = per_channel.get((q_["instance_id"], q_["queue_id"], total["profile"], q_["channel"]))
            figures = _today_of(ch, "channel") if ch is not None and q_["channel"] is not None \
                else _today_of(total, "queue")
        row["today"] = figures
        out_queues.append(row)
    sources = sorted({(t["profile"], t["time_zone"], t["date"]) for q_ in out_queues if (t := q_["today"])})
    return {
        "now": now,
        "changed_at": changed,
        "queues": out_queues,
        "agents": [{k: _json(a.get(k)) if k == "contact_states" else a.get(k) for k in _AGENT_FIELDS}
                   for a in agents],
        "agents_total": agents[0]["total"] if agents else 0,
        "today_sources": [{"profile": p, "time_zone": tz, "date": d} for p, tz, d in sources],
    }
