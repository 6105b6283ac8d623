"""Real processes: SIGTERM drains gracefully, kill -9 loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg

from collector.config import load_settings
from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql))
    except asyncpg.UndefinedTableError:  # the service has not migrated yet
        return 0
    finally:
        await conn.close()


async def _wait_for(database_url: str, sql: str, at_least: int, limit: float = 90) -> int:
    with anyio.fail_after(limit):
        while True:  # another process: the database is the only thing to watch
            n = await _count(database_url, sql)
            if n >= at_least:
                return n
            await anyio.sleep(0.1)


def _start(cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COLLECTOR_LOG_LEVEL": "info"}
    return subprocess.Popen(
        [sys.executable, "-m", "collector", "serve", "--config", str(cfg)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def _wait_exit(p: subprocess.Popen[bytes], limit: float = 40) -> int:
    return int(await anyio.to_thread.run_sync(lambda: p.wait(limit)))


async def test_sigterm_drains_and_kill_9_resumes_without_loss_or_duplicates(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=5), rate=5, burst=8))
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        # lease_ttl: how long a killed single node's heartbeat keeps its runs from the next start
        extra=('\n[scheduler]\ninitial_backfill = "6h"\nrevisits = []\ncatchup_batch = 4\n\n[api]\nport = 0\n'
               '\n[cluster]\nlease_ttl = 2\n'),
    )
    settings = load_settings(cfg)
    slices_sql = "SELECT count(*) FROM collected_slices"

    p = _start(cfg)
    await _wait_for(database_url, slices_sql, 6)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=40)[0].decode()
    assert p.returncode == 0, out
    assert "service_stopped" in out
    assert await _count(database_url, "SELECT count(*) FROM collection_runs WHERE status = 'running'") == 0

    p = _start(cfg)
    done = await _count(database_url, slices_sql)
    await _wait_for(database_url, slices_sql, done + 4)
    p.kill()  # kill -9 mid-collection
    await _wait_exit(p)
    conn = await asyncpg.connect(database_url)
    try:
        cut_short = [r["id"] for r in await conn.fetch("SELECT id FROM collection_runs WHERE status = 'running'")]
    finally:
        await conn.close()

    p = _start(cfg)
    try:
        with anyio.fail_after(90):
            while True:
                n = await _count(database_url, slices_sql)
                interrupted = await _count(database_url, "SELECT count(*) FROM collection_runs WHERE status"
                                           f" = 'interrupted' AND id = ANY('{{{','.join(map(str, cut_short))}}}')")
                if n >= 2 * 24 and interrupted == len(cut_short):
                    break
                await anyio.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        assert await _wait_exit(p) == 0
    finally:
        if p.poll() is None:
            p.kill()
    conn = await asyncpg.connect(database_url)
    try:  # the runs the kill cut short were marked interrupted by the next start (once the
        # killed process's heartbeat was older than lease_ttl)
        statuses = {r["status"] for r in await conn.fetch(
            "SELECT status FROM collection_runs WHERE id = ANY($1::bigint[])", cut_short)}
        assert statuses <= {"interrupted"}
        assert await conn.fetchval("SELECT count(*) FROM collection_runs WHERE status = 'running'") == 0
    finally:
        await conn.close()

    conn = await asyncpg.connect(database_url)
    try:
        first, last = await conn.fetchrow("SELECT min(slice_start), max(slice_start) FROM collected_slices")
        per_slice = await conn.fetch("SELECT count(*) FROM collected_slices GROUP BY instance_ref HAVING count(*) <> count(DISTINCT slice_start)")
    finally:
        await conn.close()
    assert not per_slice
    want = expected_rows(h.sim, settings.collection, first, last + timedelta(minutes=15), datetime.now(UTC))
    assert await stored_rows(database_url) == want  # everything acknowledged is there, exactly once
