"""The maintained KPI roll-up (migration 031) on a real Postgres: after first collections,
re-collections with other values (a queue group and a threshold gone from some slices,
values missing), retention dropping a day's partition and a profile's time-zone edit,
``kpi_queue_rollup`` equals a computation from scratch over ``metric_values``, and
``kpi_queue_daily`` / ``kpi_queue_weekly`` answer what 014's definitions (the scan over
``kpi_queue_interval``) answer."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from collector.adapters.postgres import PgStore, connect_pool, migrate
from collector.apis.v1.catalog import METRICS
from collector.apis.v1.planner import metric_chunks
from collector.apis.v1.unit import CODEC
from collector.model import ProfileInfo, SliceKey
from collector.ports import CompletedSlice

ROOT = Path(__file__).resolve().parent.parent
BASE = datetime(2026, 1, 1, 18, tzinfo=UTC)  # 13:00 in New York: local days straddle UTC days
SLICES = 56  # 15-minute slices to 08:00 UTC the next day
QUEUES = [f"q{n}" for n in range(4)]
CHANNELS = ["VOICE", "CHAT"]
PROFILE = ProfileInfo("v1", "15m", 900, None, "America/New_York")


def _scan_views() -> dict[str, str]:
    """014's kpi_queue_daily and kpi_queue_weekly: the roll-ups computed by scanning the slices."""
    text = (ROOT / "migrations" / "014_kpi_rollups_fast.sql").read_text()
    out = {}
    for name in ("kpi_queue_daily", "kpi_queue_weekly"):
        m = re.search(rf"CREATE OR REPLACE VIEW {name} AS\n(.*?);\n", text, flags=re.S)
        assert m, name
        out[name] = m.group(1)
    return out


def _values(ms: Any, rng: random.Random, gaps: bool) -> list[float | None]:
    out: list[float | None] = []
    for m in ms:
        if gaps and rng.random() < 0.15:
            out.append(None)
        elif m.unit == "COUNT":
            out.append(float(rng.randint(0, 40)))
        elif m.unit == "PERCENT":
            out.append(round(rng.uniform(0, 100), 2))
        else:
            out.append(round(rng.uniform(5, 400), 3))
    return out


def _slice(instance: str, k: int, sets: list[Any], rng: random.Random, at: datetime, *,
           skip: Collection[tuple[str, str]] = (), gaps: bool = False) -> CompletedSlice:
    start = BASE + timedelta(minutes=15 * k)
    pages: list[tuple[Hashable, Sequence[tuple[Hashable, list[float | None]]]]] = []
    for ms in sets:
        rows: list[tuple[Hashable, list[float | None]]] = [
            ((q, ch, None, None, None, None, None), _values(ms, rng, gaps))
                for q in QUEUES for ch in CHANNELS if (q, ch) not in skip]
        pages.append((ms, rows))
    return CompletedSlice(SliceKey("default", instance, start, start + timedelta(minutes=15)), pages, at,
                          codec=CODEC)


async def _rollup(conn: asyncpg.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    main = await conn.fetch("SELECT * FROM kpi_queue_rollup ORDER BY instance_ref, profile_id, local_date, "
                            "dims_id, utc_day")
    sl = await conn.fetch("SELECT * FROM kpi_queue_rollup_sl ORDER BY instance_ref, profile_id, local_date, "
                          "dims_id, utc_day, threshold")
    return [tuple(r) for r in main], [tuple(r) for r in sl]


def _rows(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return sorted((tuple(json.loads(v) if k == "service_level" and v is not None else v for k, v in r.items())
                   for r in records), key=repr)


async def check_rollup(conn: asyncpg.Connection, what: str) -> None:
    kept = await _rollup(conn)
    assert kept[0] and kept[1], what
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute("SELECT collector_kpi_queue_rollup_rebuild(NULL, NULL, NULL, NULL)")
        scratch = await _rollup(conn)
    finally:
        await tr.rollback()
    assert kept[0] == scratch[0], f"{what}: kpi_queue_rollup differs from a computation from scratch"
    assert kept[1] == scratch[1], f"{what}: kpi_queue_rollup_sl differs from a computation from scratch"
    for view, scan in _scan_views().items():
        got = _rows(await conn.fetch(f"SELECT * FROM {view}"))
        want = _rows(await conn.fetch(scan))
        assert got == want, f"{what}: {view} differs from the scan over kpi_queue_interval"


async def test_roll_up_equals_a_computation_from_scratch_through_recollection_retention_and_edits(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    await migrate(conn)
    pool = await connect_pool(database_url, 2)
    store = PgStore(pool)
    rng = random.Random(19)
    base_set = metric_chunks(sorted(METRICS), [20, 60])
    more_set = metric_chunks(sorted(METRICS), [20, 60, 120])
    try:
        await store.register_profile("default", PROFILE)
        at = datetime.now(UTC)
        first = [_slice(i, k, base_set, rng, at, gaps=k % 7 == 0) for i in ("i-a", "i-b") for k in range(SLICES)]
        for n in range(0, len(first), 10):
            await store.write(first[n:n + 10], None)
        await check_rollup(conn, "first collections")

        # re-collections: other values; a queue group gone from some slices (among them the
        # first and the last of its local day); a threshold added, then gone again; a slice empty
        at += timedelta(minutes=1)
        again = [
            _slice("i-a", 0, base_set, rng, at, skip={("q1", "VOICE")}),
            _slice("i-a", 20, base_set, rng, at, skip={("q1", "VOICE"), ("q2", "CHAT")}, gaps=True),
            _slice("i-a", 21, more_set, rng, at),
            _slice("i-a", 22, more_set, rng, at, gaps=True),
            _slice("i-b", 40, base_set, rng, at, skip={(q, "CHAT") for q in QUEUES}),
            CompletedSlice(SliceKey("default", "i-b", BASE + timedelta(minutes=15 * 41),
                                    BASE + timedelta(minutes=15 * 42)), [], at, codec=CODEC),
            _slice("i-b", SLICES - 1, base_set, rng, at, skip={("q3", "VOICE")}),
        ]
        await store.write(again, None)
        await check_rollup(conn, "re-collected")
        at += timedelta(minutes=1)
        await store.write([_slice("i-a", 21, base_set, rng, at), _slice("i-a", 0, base_set, rng, at)], None)
        await check_rollup(conn, "re-collected again")

        # an older collection of a slice arriving late changes nothing (newest collection wins)
        before = await _rollup(conn)
        await store.write([_slice("i-a", 22, base_set, rng, at - timedelta(hours=1))], None)
        assert await _rollup(conn) == before

        # retention drops the first UTC day's partition: its roll-up rows go with it
        dropped = await store.prune(datetime(2026, 1, 2, tzinfo=UTC))
        assert dropped == ["metric_values_20260101"]
        assert not await conn.fetchval("SELECT count(*) FROM kpi_queue_rollup WHERE utc_day = '2026-01-01'")
        await check_rollup(conn, "after retention")

        # the profile's time zone edited: its slices' local days moved
        await store.register_profile("default", ProfileInfo("v1", "15m", 900, None, "Asia/Kolkata"))
        await check_rollup(conn, "after a time-zone edit")
        await store.write([_slice("i-b", 50, base_set, rng, at + timedelta(minutes=1), gaps=True)], None)
        await check_rollup(conn, "re-collected in the new time zone")
    finally:
        await pool.close()
        await conn.close()


async def test_the_migration_fills_the_roll_up_from_what_is_stored(database_url: str) -> None:
    """Data stored before 031 (written by a writer that knew no roll-up) is rolled up by the migration."""
    from collector.sqlfiles import migrations

    conn = await asyncpg.connect(database_url)
    pool = await connect_pool(database_url, 2)
    try:
        await migrate(conn)
        store = PgStore(pool)
        await store.register_profile("default", PROFILE)
        rng = random.Random(7)
        await store.write([_slice("i-a", k, metric_chunks(sorted(METRICS), [20, 60]), rng, datetime.now(UTC))
                           for k in range(8)], None)
        want = await _rollup(conn)
        await conn.execute("TRUNCATE kpi_queue_rollup, kpi_queue_rollup_sl")
        m031 = next(m for m in migrations() if m.version == 31)
        backfill = re.search(r"^SELECT collector_kpi_queue_rollup_rebuild\(.*?\);$", m031.sql, flags=re.M)
        assert backfill
        await conn.execute(backfill.group(0))
        assert await _rollup(conn) == want
        await check_rollup(conn, "backfilled")
    finally:
        await pool.close()
        await conn.close()
