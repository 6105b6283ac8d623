"""``collector serve`` outlives its database: a real serve process against the simulator and
a private Postgres cluster that the test stops for 30 seconds and starts again."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import psutil

from collector.config import load_settings
from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows
from tests.procs import PrivatePostgres, ServeProcs, sql_value, wait_for, wait_sql

OUTAGE = 30.0  # seconds the database is away


async def test_a_30s_database_outage_and_restart_is_outlived(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    url = await private_pg.create_database()
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=5), rate=5, burst=8))
    cfg = write_config(
        tmp_path / "c.toml", url, h.sim,
        extra='\n[scheduler]\ninitial_backfill = "12h"\nrevisits = []\ncatchup_batch = 8\nretry_after = "1s"\n'
              'discovery_ttl = "2s"\n'
              'grace_period = 2.0\n'
              '\n[writer]\nchannel_size = 2\nbatch_rows = 200\nbatch_seconds = 0.1\n'
              '\n[aws]\nmax_inflight_slices = 4\n',
    )
    settings = load_settings(cfg)
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    slices = "SELECT count(*) FROM collected_slices"
    await wait_sql(url, slices, lambda n: n >= 4, 90)

    await private_pg.astop()  # the database goes away mid-collection
    await p.wait_status("/readyz", 503, 30)
    proc = psutil.Process(p.pid)
    peak_rss = 0
    with anyio.move_on_after(OUTAGE):  # the outage lasts this long; the service must stay up
        while True:
            assert p.alive(), p.output()[-4000:]
            peak_rss = max(peak_rss, proc.memory_info().rss)
            await anyio.sleep(0.5)
    assert p.alive(), p.output()[-4000:]
    await private_pg.astart()

    await p.wait_status("/readyz", 200, 60)
    await wait_sql(url, slices, lambda n: n == 2 * 48, 180)  # 12 h of 15-minute slices, 2 instances
    await wait_sql(url, "SELECT count(*) FROM collection_runs WHERE status IN ('queued', 'running')",
                   lambda n: n == 0, 60)
    statuses = await sql_value(url, "SELECT array_agg(DISTINCT status) FROM collection_runs")
    assert statuses == ["succeeded"]  # the round cut by the outage finished too

    # A restart while the scheduler is between rounds (it wakes every discovery_ttl):
    # planning fails, backs off and plans again once the database is back.
    await private_pg.astop()
    await p.wait_status("/readyz", 503, 30)

    async def planning_retried() -> bool:
        return '"operation": "scheduler_round"' in p.output()

    await wait_for(planning_retried, 30, "a scheduler round retried while the database was away")
    await private_pg.astart()
    await p.wait_status("/readyz", 200, 60)
    lag0 = await p.lag()

    async def rounds_again() -> bool:  # each round updates every instance's lag
        lag = await p.lag()
        return bool(lag0) and all(lag[k] > v for k, v in lag0.items())

    await wait_for(rounds_again, 30, "scheduler rounds after the restart")
    assert p.alive()
    print(f"peak RSS during the outage: {peak_rss / 2**20:.0f} MB")
    assert peak_rss < 250 * 2**20

    first = await sql_value(url, "SELECT min(slice_start) FROM collected_slices")
    last = await sql_value(url, "SELECT max(slice_start) FROM collected_slices")
    want = expected_rows(h.sim, settings.collection, first, last + timedelta(minutes=15), datetime.now(UTC))
    assert await stored_rows(url) == want  # exact, nothing lost, nothing doubled

    # SIGTERM while the database is away still stops the service (the waiting is cancelled).
    await private_pg.astop()
    await p.wait_status("/readyz", 503, 30)
    assert await p.stop(signal.SIGTERM) == 0
    out = p.output()
    assert "Traceback" not in out and "ExceptionGroup" not in out, out[-4000:]
    assert '"operation": "write"' in out  # the writes waited the first outage out
    assert "service_stopped" in out


async def test_a_cluster_replica_outlives_a_database_outage(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    """With [cluster]: leases lapse while the database is away and are claimed again after;
    the replica stays up and every slice lands exactly once."""
    url = await private_pg.create_database()
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=3), rate=5, burst=8))
    cfg = write_config(
        tmp_path / "c.toml", url, h.sim,
        extra='\n[scheduler]\ninitial_backfill = "12h"\nrevisits = []\ncatchup_batch = 8\nretry_after = "1s"\n'
              'grace_period = 2.0\n\n[cluster]\nenabled = true\nlease_ttl = 3\n',
    )
    settings = load_settings(cfg)
    p = serve_procs(cfg)
    slices = "SELECT count(*) FROM collected_slices"
    await wait_sql(url, slices, lambda n: n >= 4, 90)
    await private_pg.astop()
    with anyio.move_on_after(10):  # longer than the lease TTL
        while True:
            assert p.alive(), p.output()[-4000:]
            await anyio.sleep(0.5)
    await private_pg.astart()
    await wait_sql(url, slices, lambda n: n == 2 * 48, 120)
    await wait_sql(url, "SELECT count(*) FROM collection_runs WHERE status IN ('queued', 'running')",
                   lambda n: n == 0, 60)
    assert p.alive()
    assert await p.stop(signal.SIGTERM) == 0
    out = p.output()
    assert "Traceback" not in out and "ExceptionGroup" not in out, out[-4000:]
    first = await sql_value(url, "SELECT min(slice_start) FROM collected_slices")
    last = await sql_value(url, "SELECT max(slice_start) FROM collected_slices")
    want = expected_rows(h.sim, settings.collection, first, last + timedelta(minutes=15), datetime.now(UTC))
    assert await stored_rows(url) == want
