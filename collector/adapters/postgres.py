"""PostgreSQL through asyncpg: migrations, the registry of ids, and the COPY writer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import anyio
import asyncpg
import orjson
import structlog

from collector.errors import LeaseLost, MigrationError, StorageError
from collector.model import Dims, MetricSet
from collector.ports import CompletedSlice, QueueInfo
from collector.sqlfiles import check_versions, migrations, q

log = structlog.get_logger("collector.postgres")

MIGRATION_LOCK = 7_215_310_001  # pg_advisory_xact_lock key for migrations

_PG_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    ConnectionError,
    TimeoutError,
)


async def connect_pool(dsn: str, size: int = 4) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=120)
    except _PG_ERRORS as e:
        raise StorageError(f"cannot connect to the database: {type(e).__name__}: {e}") from None
    assert pool is not None
    return pool


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


def dims_key(d: Dims) -> str:
    return orjson.dumps(d).decode()


def metric_set_signature(ms: MetricSet) -> str:
    return orjson.dumps([[m.name, m.unit, m.statistic, m.threshold] for m in ms]).decode()


class PgStore:
    """Writer and registry over one asyncpg pool. Ids are cached once committed."""

    def __init__(self, pool: asyncpg.Pool, replica: str | None = None) -> None:
        self.pool = pool
        self.replica = replica  # set when leases fence this replica's writes
        self._instances: dict[str, int] = {}
        self._profiles: dict[str, int] = {}
        self._metric_sets: dict[MetricSet, int] = {}
        self._dims: dict[Dims, int] = {}
        self._partitions: set[date] = set()

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

    async def metric_set_id(self, ms: MetricSet) -> int:
        mid = self._metric_sets.get(ms)
        if mid is not None:
            return mid
        sig = metric_set_signature(ms)
        async with self.pool.acquire() as conn, conn.transaction():
            mid = await conn.fetchval(q("insert_metric_set"), sig)
            if mid is None:
                mid = await conn.fetchval(q("find_metric_set"), sig)
            await conn.execute(
                q("insert_metric_set_members"),
                mid,
                [m.name for m in ms],
                [m.statistic for m in ms],
                [m.unit for m in ms],
                [m.threshold for m in ms],
            )
        self._metric_sets[ms] = mid
        return mid

    async def dims_ids(self, dims: set[Dims]) -> None:
        missing = [d for d in dims if d not in self._dims]
        if not missing:
            return
        keys = [dims_key(d) for d in missing]
        cols = list(zip(*missing, strict=True))
        async with self.pool.acquire() as conn:
            await conn.execute(q("upsert_dimension_sets"), keys, *[list(c) for c in cols])
            found = {r["key"]: r["id"] for r in await conn.fetch(q("dimension_ids"), keys)}
        for d, k in zip(missing, keys, strict=True):
            self._dims[d] = found[k]

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

    # -- runs ------------------------------------------------------------------------
    async def create_run(
        self, requested_by: str, profile: str, start: datetime | None, end: datetime | None,
        instances: list[str], slices: int,
    ) -> int:
        run_id: int = await self.pool.fetchval(
            q("create_run"), requested_by, profile, start, end, instances, slices
        )
        return run_id

    async def finish_run(
        self, run_id: int, status: str, failed: int, requests: int, retries: int, throttles: int,
        errors: list[dict[str, Any]],
    ) -> None:
        """The run's last word; retried while the database is briefly away (a restart)."""
        for attempt in range(1, 21):
            try:
                await self.pool.execute(
                    q("finish_run"), run_id, status, failed, requests, retries, throttles,
                    orjson.dumps(errors).decode(),
                )
                return
            except _PG_ERRORS as e:
                if attempt == 20:
                    raise StorageError(f"cannot record the end of run {run_id}: {e}") from None
                log.warning("finish_run_retry", run_id=run_id, attempt=attempt, error=str(e))
                await anyio.sleep(0.5)

    # -- the writer ------------------------------------------------------------------
    async def write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> tuple[int, int]:
        """COPY the batch into staging, then delete stale rows and upsert, in one transaction."""
        try:
            return await self._write(batch, run_id)
        except _PG_ERRORS as e:
            raise StorageError(f"{type(e).__name__}: {e}") from None

    async def _write(self, batch: Sequence[CompletedSlice], run_id: int | None) -> tuple[int, int]:
        all_dims: set[Dims] = set()
        for s in batch:
            for _ms, rows in s.pages:
                for d, _v in rows:
                    all_dims.add(d)
        await self.dims_ids(all_dims)
        days = {s.key.start.astimezone(UTC).date() for s in batch} - self._partitions
        for day in sorted(days):
            try:
                await self.pool.execute(q("ensure_partition"), day)
            except asyncpg.DuplicateTableError:
                pass  # another writer created it at the same moment
            self._partitions.add(day)
        records: list[tuple[Any, ...]] = []
        slice_cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        values = 0
        dims_cache = self._dims
        for s in batch:
            k = s.key
            iref = await self.instance_ref(k.instance_id)
            pid = await self.profile_id(k.profile)
            secs = int((k.end - k.start).total_seconds())
            for ms, rows in s.pages:
                mid = await self.metric_set_id(ms)
                for d, vals in rows:
                    records.append((k.start, iref, dims_cache[d], mid, secs, pid, s.collected_at, vals))
                    values += len(vals)
            slice_cols[0].append(iref)
            slice_cols[1].append(k.start)
            slice_cols[2].append(secs)
            slice_cols[3].append(pid)
            slice_cols[4].append(s.rows)
            slice_cols[5].append(run_id)
            slice_cols[6].append(s.collected_at)
        columns = [
            "slice_start", "instance_ref", "dims_id", "metric_set_id",
            "slice_seconds", "profile_id", "collected_at", "vals",
        ]
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                fences = {s.fence for s in batch if s.fence is not None}
                if fences:
                    # Fencing: refuse the whole batch if any of its leases moved on.
                    held = await conn.fetchval(
                        q("check_fences"), self.replica, [f[0] for f in fences], [f[1] for f in fences],
                        [f[2] for f in fences],
                    )
                    if held != len(fences):
                        raise LeaseLost(f"{len(fences) - held} of {len(fences)} leases of this batch moved on")
                # Slices never collected before (a backfill, the first collection of a
                # new slice) have no rows to replace: COPY them straight into place.
                fresh = records and not await conn.fetchval(q("any_collected"), *slice_cols[:4])
                if fresh:
                    try:
                        async with conn.transaction():  # a savepoint: a racing writer falls back
                            await conn.copy_records_to_table("metric_values", records=records, columns=columns)
                    except asyncpg.UniqueViolationError:
                        fresh = False
                if not fresh:
                    await conn.execute(q("create_staging"))
                    if records:
                        await conn.copy_records_to_table("staging_values", records=records, columns=columns)
                    await conn.execute(q("delete_stale"), *slice_cols[:4])
                    await conn.execute(q("upsert_values"))
                await conn.execute(q("record_slices"), *slice_cols)
                if run_id is not None:
                    await conn.execute(q("run_progress"), run_id, len(batch), len(records), values)
        return len(records), values

    # -- scheduler state ---------------------------------------------------------------
    async def frontier(self, instance_id: str, profile: str, seconds: int) -> datetime | None:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        value: datetime | None = await self.pool.fetchval(q("get_frontier"), iref, pid, seconds)
        return value

    async def set_frontier(self, instance_id: str, profile: str, seconds: int, frontier: datetime) -> None:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        await self.pool.execute(q("set_frontier"), iref, pid, seconds, frontier)

    async def collected_starts(
        self, instance_id: str, profile: str, seconds: int, start: datetime, end: datetime
    ) -> set[datetime]:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        rows = await self.pool.fetch(q("collected_starts"), iref, pid, seconds, start, end)
        return {r["slice_start"] for r in rows}

    async def revisits_due(
        self, instance_id: str, profile: str, seconds: int, delays: list[int], now: datetime,
        oldest: datetime,
    ) -> list[datetime]:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        rows = await self.pool.fetch(q("revisits_due"), iref, pid, seconds, delays, now, oldest)
        return [r["slice_start"] for r in rows]

    async def record_gaps(
        self, instance_id: str, profile: str, seconds: int, starts: list[datetime], reason: str,
        now: datetime,
    ) -> None:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        await self.pool.execute(q("record_gaps"), iref, pid, seconds, reason, now, starts)

    async def next_revisit(
        self, instance_id: str, profile: str, seconds: int, delays: list[int], now: datetime,
        oldest: datetime,
    ) -> datetime | None:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        value: datetime | None = await self.pool.fetchval(q("next_revisit"), iref, pid, seconds, delays, now, oldest)
        return value

    async def set_resumed_from(self, run_id: int, old_run_id: int) -> None:
        await self.pool.execute(q("set_resumed_from"), run_id, old_run_id)

    async def newest_collected(self, instance_id: str, profile: str, seconds: int) -> datetime | None:
        iref, pid = await self.instance_ref(instance_id), await self.profile_id(profile)
        value: datetime | None = await self.pool.fetchval(q("newest_collected"), iref, pid, seconds)
        return value

    # -- runs for the HTTP API -----------------------------------------------------------
    async def queue_run(
        self, requested_by: str, profile: str, start: datetime, end: datetime, instances: list[str]
    ) -> int:
        run_id: int = await self.pool.fetchval(q("queue_run"), requested_by, profile, start, end, instances)
        return run_id

    async def start_run(self, run_id: int, slices: int, instances: list[str]) -> None:
        await self.pool.execute(q("start_run"), run_id, slices, instances)

    async def get_run(self, run_id: int) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(q("get_run"), run_id)
        return _run_dict(row) if row else None

    async def list_runs(self, status: str | None, before: int | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(q("list_runs"), status, before, limit)
        return [_run_dict(r) for r in rows]

    async def interrupt_stale_runs(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(q("interrupt_stale_runs"))
        return [dict(r) for r in rows]

    async def prune(self, cutoff: datetime) -> list[str]:
        """Retention: drop the day partitions wholly before ``cutoff`` (no row deletes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            dropped = [r["dropped"] for r in await conn.fetch(q("drop_partitions_before"), cutoff)]
            await conn.execute(q("prune_bookkeeping"), cutoff)
        self._partitions = {d for d in self._partitions if f"metric_values_{d:%Y%m%d}" not in dropped}
        return dropped

    # -- leases (scale-out) -------------------------------------------------------------
    async def heartbeat(self, replica: str, api_url: str | None) -> None:
        await self.pool.execute(q("heartbeat"), replica, api_url)

    async def ensure_shards(self, shards: Sequence[tuple[str, str]]) -> None:
        await self.pool.execute(q("ensure_shards"), [a for a, _r in shards], [r for _a, r in shards])

    async def live_replicas(self, ttl: float) -> int:
        return int(await self.pool.fetchval(q("live_replicas"), ttl))

    async def renew_leases(self, replica: str, ttl: float) -> dict[tuple[str, str], int]:
        rows = await self.pool.fetch(q("renew_leases"), replica, ttl)
        return {(r["account"], r["region"]): r["generation"] for r in rows}

    async def claim_leases(self, replica: str, ttl: float, n: int) -> dict[tuple[str, str], int]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("claim_leases"), replica, ttl, n)
        return {(r["account"], r["region"]): r["generation"] for r in rows}

    async def release_leases(self, replica: str, shards: Sequence[tuple[str, str]] | None) -> None:
        names = None if shards is None else [f"{a}/{r}" for a, r in shards]
        await self.pool.execute(q("release_leases"), replica, names)

    async def remove_replica(self, replica: str) -> None:
        await self.pool.execute(q("remove_replica"), replica)

    async def add_run_parts(self, run_id: int, shards: Sequence[tuple[str, str]]) -> None:
        await self.pool.execute(q("add_run_parts"), run_id, [a for a, _r in shards], [r for _a, r in shards])

    async def claim_part(self, replica: str, owned: Sequence[tuple[str, str]], ttl: float) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("requeue_orphan_parts"), ttl)
            part = await conn.fetchrow(q("claim_part"), replica, [f"{a}/{r}" for a, r in owned])
            if part is None:
                return None
            run = await conn.fetchrow(q("get_run"), part["run_id"])
        return {"account": part["account"], "region": part["region"], **_run_dict(run)}

    async def part_started(self, run_id: int, slices: int) -> None:
        await self.pool.execute(q("part_started"), run_id, slices)

    async def finish_part(
        self, run_id: int, account: str, region: str, status: str, failed: int, requests: int,
        retries: int, throttles: int, errors: list[dict[str, Any]],
    ) -> str | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("finish_part"), run_id, account, region, status, failed, requests,
                               retries, throttles, orjson.dumps(errors).decode())
            final: str | None = await conn.fetchval(q("settle_run"), run_id)
        return final

    async def cluster_state(self) -> dict[str, Any]:
        rows = await self.pool.fetch(q("cluster_state"))
        free = await self.pool.fetch(q("unowned_shards"))
        return {
            "replicas": [
                {**{k: r[k] for k in ("id", "api_url", "started_at")},
                 "heartbeat_age": float(r["heartbeat_age"]), "shards": orjson.loads(r["shards"])}
                for r in rows
            ],
            "unowned_shards": [{"account": f["account"], "region": f["region"]} for f in free],
        }

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await check_schema(conn)


def _run_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    if isinstance(d.get("errors"), str):
        d["errors"] = orjson.loads(d["errors"])
    return d

