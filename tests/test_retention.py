"""Retention drops whole day partitions; nothing is deleted row by row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from collector.adapters.postgres import PgStore, connect_pool, migrate
from collector.apis.v1.planner import metric_chunks
from collector.apis.v1.unit import CODEC
from collector.model import SliceKey
from collector.ports import CompletedSlice


async def test_retention_drops_old_partitions_and_keeps_the_rest(database_url: str) -> None:
    pool = await connect_pool(database_url, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PgStore(pool)
        ms = metric_chunks(["CONTACTS_HANDLED", "HANDLE_TIME"], [])[0]
        day0 = datetime(2026, 3, 1, tzinfo=UTC)
        batch = [
            CompletedSlice(
                SliceKey("default", "i-1", day0 + timedelta(days=d, hours=23, minutes=45),
                         day0 + timedelta(days=d + 1)),
                [(ms, [(("q1", "VOICE", None, None, None, None, None), [float(d), None])])],
                datetime.now(UTC), None, CODEC,
            )
            for d in range(3)
        ]
        await store.write(batch, None)
        conn = await asyncpg.connect(database_url)
        try:
            parts = await conn.fetch(
                "SELECT relid::text AS name FROM pg_partition_tree('metric_values') WHERE isleaf ORDER BY 1"
            )
            assert [p["name"] for p in parts] == ["metric_values_20260301", "metric_values_20260302", "metric_values_20260303"]
            dropped = await store.prune(day0 + timedelta(days=2))  # keep the last day only
            assert dropped == ["metric_values_20260301", "metric_values_20260302"]
            rows = await conn.fetch("SELECT interval_start, metric_name, value FROM historical_metrics ORDER BY 2")
            assert [(r["interval_start"], r["metric_name"], r["value"]) for r in rows] == [
                (day0 + timedelta(days=2, hours=23, minutes=45), "CONTACTS_HANDLED", 2.0),
                (day0 + timedelta(days=2, hours=23, minutes=45), "HANDLE_TIME", None),
            ]
            assert await conn.fetchval("SELECT count(*) FROM collected_slices") == 1
            # a write into a dropped day recreates its partition
            await store.write(batch[:1], None)
            assert await conn.fetchval("SELECT count(*) FROM historical_metrics") == 4
        finally:
            await conn.close()
    finally:
        await pool.close()
