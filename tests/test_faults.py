"""Faults on the way: every test ends by checking each slice's rows are exact and none doubled."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg

from collector.config import load_settings
from collector.model import SliceKey
from collector.progress import Progress
from collector.runs import collect
from collector.simulator import SimulatorConfig
from collector.wiring import runtime
from tests.conftest import StartSim, write_config
from tests.helpers import Row, expected_rows, stored_rows, utc_floor


def _slice_of(row: Row) -> str:
    return str(SliceKey("default", str(row[0]), cast(datetime, row[1]), cast(datetime, row[2])))


def _range(hours: float) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    return end - timedelta(hours=hours), end


class _FirstWrite(Progress):
    def __init__(self) -> None:
        self.written = anyio.Event()

    def slices_written(self, keys: object, rows: int) -> None:
        self.written.set()


async def test_database_connections_dropped_mid_collection(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(dataclasses.replace(small_fleet, latency=0.01))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra="\n[writer]\nbatch_rows = 50\nbatch_seconds = 0.05\n")
    settings = load_settings(cfg)
    start, end = _range(3)
    progress = _FirstWrite()
    killed: list[int] = []

    async def kill_connections() -> None:
        await progress.written.wait()
        admin = await asyncpg.connect(database_url)
        try:
            # current_database(): the embedded server's URL keeps its socket path in the
            # query string, so the name is not the URL's last path segment
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            killed.append(len(rows))
        finally:
            await admin.close()

    async with runtime(settings) as rt, anyio.create_task_group() as tg:
        tg.start_soon(kill_connections)
        _run, summary = await collect(rt, start, end, progress=progress)
    assert killed and killed[0] >= 1
    assert summary.slices_failed == 0 and summary.slices_done == 12
    assert await stored_rows(database_url) == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))


async def test_slow_responses_and_connections_reset_mid_body_are_retried(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra="\n[aws]\nread_timeout = 0.5\n")
    settings = load_settings(cfg)
    start, end = _range(1)
    h.sim.delay_next = [2.0, 2.0]  # past the client's read timeout
    h.sim.reset_next = 2
    async with runtime(settings) as rt:
        _run, summary = await collect(rt, start, end)
    assert summary.slices_failed == 0
    assert summary.retries >= 4
    assert h.sim.stats.by_code["ConnectionReset"] == 2
    assert await stored_rows(database_url) == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))


async def test_malformed_bodies_fail_their_slice_and_leave_nothing_half_written(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig
) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\n'
                                  'service_levels = [20]\nmax_results = 5\n',
                       extra="\n[aws]\nworkers_per_account = 1\n")
    settings = load_settings(cfg)
    start, end = _range(1)
    original = h.sim.get_metric_data
    bad_bodies = [
        b'{"MetricResults": [{"Dimensions": {"Channel": "VOICE"}, "Collections": [',  # truncated
        b'{"MetricResults": [{"Collections": [{"Metric": {"Name": "CONTACTS_HANDLED", "Unit": "COUNT",'
        b' "Statistic": "SUM"}, "Value": "12"}]}]}',  # a Value that is a string
        b'{"MetricResults": [{"Collections": [{"Metric": {"Name": "NOT_A_METRIC"}, "Value": 1}]}]}',
    ]
    corrupted: set[object] = set()

    def second_page_broken(instance_id: str, region: str, body: dict[str, Any]) -> bytes:
        if body.get("NextToken") and bad_bodies and body["StartTime"] not in corrupted:
            corrupted.add(body["StartTime"])
            return bad_bodies.pop(0)  # the slice's first page was fine; a later one is not
        page: bytes = original(instance_id, region, body)
        return page

    h.sim.get_metric_data = second_page_broken  # type: ignore[method-assign]
    async with runtime(settings) as rt:
        run_id, summary = await collect(rt, start, end)
        run = await rt.store.get_run(run_id)
    assert not bad_bodies
    assert summary.slices_failed == 3 and run is not None and run.status == "partial"
    reasons = " ".join(e["reason"] for e in run.errors)
    assert "not JSON" in reasons and "got `str`" in reasons and "NOT_A_METRIC" in reasons
    failed = {k for k, _r in summary.failures}
    got = await stored_rows(database_url)
    h.sim.get_metric_data = original  # type: ignore[method-assign]
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    for row, n in want.items():
        key = _slice_of(row)
        if key in failed:
            assert row not in got  # nothing of a failed slice was written
        else:
            assert got[row] == n == 1
    assert sum(got.values()) == sum(n for r, n in want.items() if _slice_of(r) not in failed)


async def test_postgres_restarted_mid_collection(start_sim: StartSim, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    """A Postgres of its own (embedded), stopped and started again while the collector
    writes: the writer reconnects and retries; every slice lands exactly once."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    from collector.adapters import embedded
    from collector.adapters.embedded import embedded_dsn

    data = tmp_path / "pg"
    dsn = await anyio.to_thread.run_sync(embedded_dsn, str(data))
    h = await start_sim(dataclasses.replace(small_fleet, latency=0.02))
    cfg = write_config(tmp_path / "c.toml", dsn, h.sim,
                       extra="\n[writer]\nbatch_rows = 30\nbatch_seconds = 0.05\nmax_attempts = 12\n")
    settings = load_settings(cfg)
    start, end = _range(4)
    progress = _FirstWrite()
    restarted = anyio.Event()

    server = embedded._servers[str(data.resolve())]

    async def restart_postgres() -> None:
        await progress.written.wait()
        await anyio.to_thread.run_sync(
            lambda: pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user))
        await anyio.sleep(1.0)  # the database is away for a while
        await anyio.to_thread.run_sync(server.ensure_postgres_running)
        restarted.set()

    async with runtime(settings) as rt, anyio.create_task_group() as tg:
        tg.start_soon(restart_postgres)
        _run, summary = await collect(rt, start, end, progress=progress)
    assert restarted.is_set()
    assert summary.slices_failed == 0 and summary.slices_done == 16
    assert await stored_rows(dsn) == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
