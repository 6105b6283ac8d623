"""A page that repeats a dimension group fails its slice, by name; every other slice lands.

Real botocore against the simulator, real Postgres.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.config import load_settings
from collector.model import SliceKey
from collector.runs import collect
from collector.simulator import SimulatorConfig
from collector.wiring import runtime
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows, utc_floor


async def test_a_repeated_dimension_group_fails_only_its_slice(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig
) -> None:
    h = await start_sim(small_fleet)
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\n'
                                  'metrics = ["CONTACTS_HANDLED", "HANDLE_TIME"]\nservice_levels = []\n',
                       extra="\n[aws]\nworkers_per_account = 1\n")
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    start = end - timedelta(hours=1)
    h.sim.repeat_group_next = 1  # the first page served repeats its first group
    async with runtime(settings) as rt:
        run_id, summary = await collect(rt, start, end)  # returns: nothing escapes
        run = await rt.store.get_run(run_id)
    assert h.sim.repeat_group_next == 0
    assert summary.slices_failed == 1 and run is not None and run.status == "partial"
    (failed_key, reason), = summary.failures
    assert "repeats the dimension group" in reason and "Queue=" in reason and "Channel=" in reason
    assert [e["reason"] for e in run.errors] == [reason]
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    landed = {r: n for r, n in want.items() if str(SliceKey("default", str(r[0]), r[1], r[2])) != failed_key}  # type: ignore[arg-type]
    assert landed and len(landed) < len(want)
    assert await stored_rows(database_url) == landed  # the others, exactly once each
