"""Migrations and the stored shape, on a real Postgres."""

from __future__ import annotations

import anyio
import asyncpg

from collector import schema
from collector.adapters.postgres import migrate
from collector.apis.v1 import catalog
from collector.sqlfiles import migrations


async def _columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(r["column_name"], r["data_type"]) for r in rows]


async def test_migrated_schema_is_what_the_code_expects(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == [m.version for m in migrations()]
        assert await _columns(conn, "historical_metrics") == schema.HISTORICAL_METRICS
        assert await _columns(conn, "historical_metrics_wide") == schema.HISTORICAL_METRICS_WIDE
        for table, cols in schema.TABLES.items():
            assert {c for c, _t in await _columns(conn, table)} == cols, table
        for view, names in schema.KPI_VIEWS.items():
            assert [c for c, _t in await _columns(conn, view)] == names, view
        wide_metrics = {c.upper() for c in schema.WIDE_METRIC_COLUMNS}
        assert wide_metrics | {"SERVICE_LEVEL"} == set(catalog.METRICS)
    finally:
        await conn.close()


async def test_migrate_is_idempotent_and_safe_when_two_processes_race(database_url: str) -> None:
    results: list[list[int]] = []

    async def one() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            results.append(await migrate(conn))
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert sorted(map(len, results)) == [0, 0, len(migrations())]
    await one()
    assert results[-1] == []
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(migrations())
    finally:
        await conn.close()
