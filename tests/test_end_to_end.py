"""Acceptance: real botocore over loopback against the simulator, real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from collector.cli import main
from collector.config import load_settings
from collector.runs import collect
from collector.simulator import FleetSpec, SimulatorConfig
from collector.wiring import runtime
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, snapshot, stored_rows, utc_floor


def _range(hours: float, granularity: int = 900) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), granularity)
    return end - timedelta(hours=hours), end


async def test_three_accounts_with_faults_land_exact_rows_and_rerun_changes_nothing(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(
        SimulatorConfig(
            fleet=FleetSpec(accounts=3, queues_per_instance=150),
            error_rate=0.02,
            throttle=True,
        )
    )
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim)
    start, end = _range(2)
    args = ["collect", "--config", str(cfg), "--start", start.isoformat(), "--end", end.isoformat()]
    code = await anyio.to_thread.run_sync(main, args)
    assert code == 0
    settings = load_settings(cfg)
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    got = await stored_rows(database_url)
    assert got == want  # no row missing, none extra, none duplicated
    assert max(got.values()) == 1
    assert len(want) > 3 * 8 * 150 * 27  # a real volume: most groups active
    nulls = [r for r in got if r[12] is None]
    assert nulls, "averages over zero contacts must land as NULL"
    assert all(r[10] not in ("CONTACTS_HANDLED", "CONTACTS_QUEUED") for r in nulls)
    assert h.sim.stats.by_status.get(400, 0) == 0, h.sim.stats.bad_requests
    assert h.sim.stats.by_status.get(500, 0) > 0  # faults were injected and survived

    before = await snapshot(database_url)
    code = await anyio.to_thread.run_sync(main, args)
    assert code == 0
    assert await snapshot(database_url) == before  # second run: nothing changed, nothing added


@pytest.mark.parametrize(
    "groupings",
    [
        ["ROUTING_PROFILE", "QUEUE"],
        ["AGENT_STATUS"],
        ["SUBTYPE", "CHANNEL"],
        ["VALIDATION_TEST_TYPE", "QUEUE"],
        [],
    ],
)
async def test_every_grouping_lands_its_dimension_columns(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig, groupings: list[str]
) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        collection=f'granularity = "30m"\ngroupings = {groupings!r}\nmetrics = "all"\nservice_levels = [15]'.replace("'", '"'),
    )
    settings = load_settings(cfg)
    start, end = _range(1, 1800)
    async with runtime(settings) as rt:
        _run, summary = await collect(rt, start, end)
    assert summary.slices_failed == 0
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    got = await stored_rows(database_url)
    assert got == want
    columns = {
        "QUEUE": 3, "CHANNEL": 4, "ROUTING_PROFILE": 5, "AGENT_STATUS": 6,
        "SUBTYPE": 8, "VALIDATION_TEST_TYPE": 9,
    }
    for g, col in columns.items():
        present = {r[col] is not None for r in got}
        assert present == {g in groupings}, (g, present)
    assert all(r[7] is None for r in got)  # ROUTING_STEP_EXPRESSION is never grouped in v1


async def test_filters_reach_the_api(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    inst = next(iter(h.sim.fleet.instances.values()))
    rp = inst.routing_profiles[:1]
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        collection=(
            'granularity = "15m"\ngroupings = ["ROUTING_PROFILE", "SUBTYPE"]\n'
            'metrics = ["CONTACTS_HANDLED", "HANDLE_TIME"]\nservice_levels = []\n'
            f'channels = ["CHAT"]\nrouting_profiles = ["{rp[0]}"]\nsubtypes = ["connect:SMS"]'
        ),
    )
    settings = load_settings(cfg)
    # The simulated traffic follows the time of day, and a CHAT/SMS group of one routing
    # profile can be idle for a while: take the newest half hour in which it is not.
    start, end = _range(0.5)
    while not expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC)):
        start, end = start - timedelta(minutes=30), end - timedelta(minutes=30)
        assert end > datetime.now(UTC) - timedelta(hours=22), "the simulator has no such traffic"
    async with runtime(settings) as rt:
        await collect(rt, start, end)
    got = await stored_rows(database_url)
    assert got == expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    assert {r[5] for r in got} == {rp[0]}
    assert {r[8] for r in got} == {"connect:SMS"}


async def test_cli_exits_1_and_lists_failed_slices_while_the_rest_land(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        extra='\n[[instances]]\nid = "00000000-dead-beef-0000-000000000000"\nregion = "us-east-1"\nqueues = "all"',
    )
    start, end = _range(0.5)
    args = ["collect", "--config", str(cfg), "--start", start.isoformat(), "--end", end.isoformat()]
    code = await anyio.to_thread.run_sync(main, args)
    out = capsys.readouterr()
    assert code == 1
    assert "2 slice(s) failed" in out.err
    assert "00000000-dead-beef-0000-000000000000@" in out.err and "ResourceNotFoundException" in out.err
    settings = load_settings(cfg)
    real = list(h.sim.fleet.instances)
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC), instances=real)
    assert await stored_rows(database_url) == want
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        run = await conn.fetchrow("SELECT status, slices_total, slices_done, slices_failed, errors FROM collection_runs")
    finally:
        await conn.close()
    assert (run["status"], run["slices_total"], run["slices_done"], run["slices_failed"]) == ("partial", 4, 2, 2)
    assert "ResourceNotFoundException" in run["errors"]
