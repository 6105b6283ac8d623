"""Real ``collector serve`` processes against the simulator (issue 11 items 1, 2, 4, 11):
fleets of accounts only, instances that cannot be resolved, a thousand unfinished runs,
and a full one-off queue."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import write_config
from tests.helpers import utc_floor
from tests.procs import ServeProcess, sql_value, wait_sql


def _range(hours: float) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    return end - timedelta(hours=hours), end


async def test_a_full_one_off_queue_answers_429_with_retry_after_and_records_nothing(
    start_sim, database_url: str, serve_procs: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=3), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra="\n[scheduler]\nenabled = false\n")
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    start, end = _range(0.5)
    body = {"start": start.isoformat(), "end": end.isoformat()}
    status, raw, _ = await p.response("POST", "/collections", json=body)
    assert status == 202
    first = json.loads(raw)["id"]
    await wait_sql(database_url, "SELECT status FROM collection_runs WHERE id = $1", lambda s: s == "succeeded",
                   60, first)

    conn = await asyncpg.connect(database_url)  # 100 one-off runs wait (the loop is idle until woken)
    try:
        await conn.execute(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " SELECT 'api', 'default', $1, $2, '{}', 'queued' FROM generate_series(1, 100)", start, end)
    finally:
        await conn.close()
    runs = await sql_value(database_url, "SELECT count(*) FROM collection_runs")
    status, raw, headers = await p.response("POST", "/collections", json=body)
    assert status == 429, raw
    assert int(headers["Retry-After"]) > 0
    assert "queued" in json.loads(raw)["detail"]
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs") == runs  # nothing recorded
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE status = 'failed'") == 0
    assert await p.stop(signal.SIGTERM) == 0
