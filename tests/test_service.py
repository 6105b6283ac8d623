"""The long-lived service with an injected clock: slices, revisits, downtime, gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from collector.clock import ManualClock
from collector.config import Settings, load_settings
from collector.simulator import FleetSpec, SimulatorConfig
from collector.wiring import serve
from tests.conftest import SimHandle, StartSim, write_config
from tests.helpers import expected_rows, stored_rows

G = 900


def _base() -> datetime:
    n = int(datetime.now(UTC).timestamp())
    return datetime.fromtimestamp(n - n % G, UTC) - timedelta(hours=2)


async def _setup(start_sim: StartSim, database_url: str, tmp_path: Path, clock: ManualClock, **sched: str) -> tuple[SimHandle, Settings]:
    h = await start_sim(
        SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=5), throttle=False, late_seconds=1800),
        now=lambda: clock.now().timestamp(),
    )
    lines = ["[scheduler]"] + [f'{k} = {v}' for k, v in sched.items()]
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\nservice_levels = [20]',
                       extra="\n".join(lines))
    return h, load_settings(cfg)


async def _slices(database_url: str) -> list[tuple[str, datetime, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT i.instance_id, c.slice_start, c.times_collected FROM collected_slices c"
            " JOIN instances i ON i.ref = c.instance_ref ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def _gaps(database_url: str) -> set[tuple[str, datetime]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT instance_id, interval_start FROM collection_gaps_view")
    finally:
        await conn.close()
    return {tuple(r) for r in rows}


async def test_each_slice_once_plus_the_revisit_with_late_data(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    b = _base()
    clock = ManualClock(b + timedelta(minutes=15, seconds=1))
    h, settings = await _setup(start_sim, database_url, tmp_path, clock, initial_backfill='"15m"')
    until = b + timedelta(seconds=4 * G + 60)  # three more slice boundaries and the first revisit
    await serve(settings, clock=clock, until=until, with_api=False, handle_signals=False)

    got = await _slices(database_url)
    starts = sorted({s for _i, s, _n in got})
    assert starts == [b - timedelta(seconds=G) + timedelta(seconds=k * G) for k in range(4)]
    for iid, start, times in got:
        revisit_due = start + timedelta(seconds=G + 3600) <= until
        assert times == (2 if revisit_due else 1), (iid, start, times)
    assert len(got) == 2 * 4

    # Values: the revisited slice holds the settled numbers, the others what the API said then.
    revisited = {s for _i, s, n in got if n == 2}
    want = expected_rows(
        h.sim, settings.collection, b - timedelta(seconds=G), b + timedelta(seconds=3 * G), clock.now(),
        provisional=lambda s, e: s not in revisited,
    )
    assert await stored_rows(database_url) == want
    assert any(p for _s, _e, p in h.sim.served) and any(not p for _s, _e, p in h.sim.served)


async def test_downtime_of_6_hours_is_caught_up_oldest_first(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    b = _base()
    clock = ManualClock(b + timedelta(minutes=15, seconds=1))
    h, settings = await _setup(start_sim, database_url, tmp_path, clock, initial_backfill='"15m"',
                               revisits="[]", catchup_batch="8")
    await serve(settings, clock=clock, until=clock.now() + timedelta(seconds=60), with_api=False,
                handle_signals=False)
    assert len(await _slices(database_url)) == 2
    served_before = len(h.sim.served)

    clock.advance(6 * 3600)  # the service was down for six hours
    restart = clock.now()
    await serve(settings, clock=clock, until=restart + timedelta(seconds=60), with_api=False,
                handle_signals=False)
    got = await _slices(database_url)
    newest_end = restart - timedelta(minutes=15)
    newest_end -= timedelta(seconds=int(newest_end.timestamp()) % G)
    want_starts = []
    s = b - timedelta(seconds=G)
    while s < newest_end:
        want_starts.append(s)
        s += timedelta(seconds=G)
    per_instance = {iid: [st for i, st, _n in got if i == iid] for iid, _s, _n in got}
    for iid, starts in per_instance.items():
        assert starts == want_starts, iid
    assert all(n == 1 for _i, _s, n in got)  # nothing collected twice
    assert not await _gaps(database_url)

    # Oldest first: the first catch-up round asked for the oldest missed slices (plus the
    # current one, which never starves); later rounds only for newer ones.
    order = [st for st, _e, _p in h.sim.served[served_before:]]
    current = int(want_starts[-1].timestamp())
    catchup = [x for x in order if x != current]
    first_round = sorted(set(catchup))[: 8]
    assert set(catchup[: 2 * 8]) == set(first_round)  # 2 instances x 8 oldest slices
    assert current in order[: 2 * 9]
    assert catchup == sorted(catchup) or sorted(set(catchup[: 16])) == first_round


async def test_downtime_of_30_hours_records_gaps_and_collects_the_rest(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    b = _base()
    clock = ManualClock(b + timedelta(minutes=15, seconds=1))
    h, settings = await _setup(start_sim, database_url, tmp_path, clock, initial_backfill='"15m"',
                               revisits="[]", catchup_batch="200")
    await serve(settings, clock=clock, until=clock.now() + timedelta(seconds=60), with_api=False,
                handle_signals=False)
    clock.advance(30 * 3600)
    restart = clock.now()
    await serve(settings, clock=clock, until=restart + timedelta(seconds=60), with_api=False,
                handle_signals=False)

    margin = timedelta(seconds=settings.scheduler.seconds("lookback_margin"))
    oldest_ok_e = int((restart - timedelta(hours=24) + margin).timestamp())
    oldest_ok = datetime.fromtimestamp(-(-oldest_ok_e // G) * G, UTC)
    gaps = await _gaps(database_url)
    got = await _slices(database_url)
    instances = {i for i, _s, _n in got}
    first_missed = b  # the slice after the one collected before the downtime
    expect_gaps = set()
    s = first_missed
    while s < oldest_ok:
        expect_gaps |= {(i, s) for i in instances}
        s += timedelta(seconds=G)
    assert gaps == expect_gaps and len(gaps) > 2 * 20
    collected_after = {(i, st) for i, st, _n in got if st >= oldest_ok}
    newest_end = restart - timedelta(minutes=15)
    newest_end -= timedelta(seconds=int(newest_end.timestamp()) % G)
    n_slices = int((newest_end - oldest_ok).total_seconds()) // G
    assert len(collected_after) == 2 * n_slices
    assert not {(i, st) for i, st, _n in got} & gaps
    assert h.sim.stats.by_status.get(400, 0) == 0, h.sim.stats.bad_requests


async def test_clock_skew_of_minutes_sends_no_request_the_api_refuses(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    """The collector's clock 5 minutes behind the API's: after a long outage the oldest
    slices it still tries are inside the API's lookback (the margin absorbs the skew)."""
    b = _base()
    clock = ManualClock(b + timedelta(minutes=15, seconds=1))
    skew = 300.0
    h = await start_sim(
        SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=3), throttle=False),
        now=lambda: clock.now().timestamp() + skew,
    )
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       collection='granularity = "15m"\ngroupings = ["QUEUE"]\nmetrics = ["CONTACTS_HANDLED"]\nservice_levels = []',
                       extra='[scheduler]\ninitial_backfill = "15m"\nrevisits = []\ncatchup_batch = 200')
    settings = load_settings(cfg)
    await serve(settings, clock=clock, until=clock.now() + timedelta(seconds=60), with_api=False, handle_signals=False)
    clock.advance(26 * 3600)
    restart = clock.now()
    await serve(settings, clock=clock, until=restart + timedelta(seconds=60), with_api=False, handle_signals=False)
    assert h.sim.stats.by_status.get(400, 0) == 0, h.sim.stats.bad_requests
    got = await _slices(database_url)
    gaps = await _gaps(database_url)
    assert gaps and len(got) > 90  # the aged-out ones are gaps, the rest collected
    oldest = min(st for _i, st, _n in got[1:])
    assert oldest.timestamp() >= restart.timestamp() + skew - 24 * 3600
