"""The V2 scheduler's rounds on real Postgres with a hand-driven clock: whole windows for
catch-up (a 90-day initial backfill), watermarks keyed on the nominal interval across
23/25-hour DST days, and gaps when a slice ages out of the 90 days."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from collector.adapters.postgres import PgStore, migrate
from collector.apis.v2.api import V2Api
from collector.apis.v2.planner import nominal_seconds, oldest_start
from collector.apis.v2.settings import V2ProfileSettings
from collector.model import ScheduleOptions, Target
from collector.ports import CompletedSlice, FetchUnit
from collector.scheduler import advance_frontiers, plan_round

# the queues are the target's own (its resolution): a V2 profile's "all" queues filter takes them
T = Target("inst-1", "us-east-1", "111111111111", ("q1", "q2"))


def _profile(interval: str, tz: str = "UTC", backfill: str | None = None) -> V2ProfileSettings:
    return V2ProfileSettings(name=f"p_{interval}", api="v2", interval=interval, time_zone=tz,  # type: ignore[arg-type]
                             groupings=["QUEUE"], filters={"queues": "all"}, metrics=["CONTACTS_HANDLED"],
                             initial_backfill=backfill)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    yield PgStore(pool)
    await pool.close()


async def _collect(store: PgStore, units: Sequence[FetchUnit], at: dt.datetime) -> None:
    for u in units:  # as the pipeline does: a window's slices in one batch
        await store.write([CompletedSlice(k, [], at) for k in u.slice_keys], None)


def _start(u: FetchUnit) -> dt.datetime:
    return u.slice_keys[0].start


def _end(u: FetchUnit) -> dt.datetime:
    return u.slice_keys[-1].end


async def _frontier(store: PgStore, profile: str, seconds: int) -> dt.datetime | None:
    """The watermark of inst-1's ``profile`` kept under ``seconds`` (the nominal interval)."""
    frontier: dt.datetime | None = await store.pool.fetchval(
        "SELECT w.frontier FROM watermarks w JOIN instances i ON i.ref = w.instance_ref "
        "JOIN profiles p ON p.id = w.profile_id WHERE i.instance_id = 'inst-1' AND p.name = $1 "
        "AND w.slice_seconds = $2", profile, seconds)
    return frontier


async def _collected_starts(store: PgStore, profile: str, start: dt.datetime, end: dt.datetime) -> set[dt.datetime]:
    """The starts of inst-1's collected slices of ``profile`` in [start, end)."""
    rows = await store.pool.fetch(
        "SELECT c.slice_start FROM collected_slices c JOIN instances i ON i.ref = c.instance_ref "
        "JOIN profiles p ON p.id = c.profile_id WHERE i.instance_id = 'inst-1' AND p.name = $1 "
        "AND c.slice_start >= $2 AND c.slice_start < $3", profile, start, end)
    return {r["slice_start"] for r in rows}


async def test_a_90_day_backfill_is_caught_up_in_whole_windows(store: PgStore) -> None:
    now = dt.datetime(2026, 11, 26, 12, 7, tzinfo=dt.UTC)
    prof = _profile("1h", "Europe/London", backfill="90d")
    api = V2Api(prof)
    # catchup_batch counts fetch units: a V2 window (many slices, the same requests) is one
    opts = ScheduleOptions(settle=900, revisits=(), catchup_batch=4, lookback_margin=600)
    rp = await plan_round(store, [T], [api], opts, now)
    oldest = oldest_start(now, "HOUR", "Europe/London", 600)
    assert _start(rp.units[0]) == oldest  # 90 days back, inside the margin
    # 4 windows of catch-up (71 hours each: a request covers < 3 days) and the newest slice
    assert [len(u.slice_keys) for u in rp.units[:4]] == [71] * 4 and len(rp.units) == 5
    assert _end(rp.units[-1]) == dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC)
    assert rp.more and rp.wake_at == now and all(len(u.requests) == 1 for u in rp.units)
    rounds = 1
    while rp.more:
        await _collect(store, rp.units, now)
        await advance_frontiers(store, [T], [api], now, opts)
        rp = await plan_round(store, [T], [api], opts, now)
        rounds += 1
    await _collect(store, rp.units, now)
    await advance_frontiers(store, [T], [api], now, opts)
    assert rounds == 7  # 2158 hours: 31 windows of up to 71, four a round and the newest
    hours = int((dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC) - oldest).total_seconds() // 3600)
    assert len(await _collected_starts(store, prof.name, oldest, now)) == hours
    assert await _frontier(store, prof.name, 3600) == dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC)
    assert (await plan_round(store, [T], [api], opts, now)).units == []


async def test_day_watermarks_cross_a_25_hour_day(store: PgStore) -> None:
    tz = "America/New_York"
    prof = _profile("1d", tz, backfill="10d")
    api = V2Api(prof)
    opts = ScheduleOptions(settle=900, revisits=(3600,), catchup_batch=16, lookback_margin=600)
    now = dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC)
    rp = await plan_round(store, [T], [api], opts, now)
    lengths = [(k.end - k.start).total_seconds() / 3600 for u in rp.units for k in u.slice_keys]
    assert len(lengths) == 9 and 25.0 in lengths  # 240 hours back, rounded up to local midnight: and set(lengths) == {24.0, 25.0}
    await _collect(store, rp.units, now)
    await advance_frontiers(store, [T], [api], now, opts)
    today = dt.datetime(2026, 11, 5, 5, tzinfo=dt.UTC)  # local midnight, EST
    assert await _frontier(store, prof.name, nominal_seconds("DAY")) == today
    # the next local day, once settled: only the new slice, then its revisit an hour after its end
    nxt = dt.datetime(2026, 11, 6, 5, 20, tzinfo=dt.UTC)
    rp = await plan_round(store, [T], [api], opts, nxt)
    assert [(_start(u), len(u.slice_keys)) for u in rp.units] == [(today, 1)]
    await _collect(store, rp.units, nxt)
    await advance_frontiers(store, [T], [api], nxt, opts)
    assert (await plan_round(store, [T], [api], opts, nxt)).units == []
    again = await plan_round(store, [T], [api], opts, nxt + dt.timedelta(hours=1))
    assert [(_start(u), len(u.slice_keys)) for u in again.units] == [(today, 1)]


async def test_slices_that_age_out_of_90_days_become_gaps(store: PgStore) -> None:
    prof = _profile("1d", "UTC", backfill="3d")
    api = V2Api(prof)
    opts = ScheduleOptions(settle=900, revisits=(), catchup_batch=16, lookback_margin=600)
    t0 = dt.datetime(2026, 8, 1, 12, tzinfo=dt.UTC)
    first = await plan_round(store, [T], [api], opts, t0)
    assert sum(len(u.slice_keys) for u in first.units) == 3
    # the collector was away for 100 days: what it never collected and is now past 90 days is a gap
    now = t0 + dt.timedelta(days=100)
    rp = await plan_round(store, [T], [api], opts, now)
    oldest = oldest_start(now, "DAY", "UTC", 600)
    assert rp.gaps == (oldest - dt.datetime(2026, 7, 29, tzinfo=dt.UTC)).days
    assert _start(rp.units[0]) == oldest
    async with store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collection_gaps WHERE slice_seconds = 86400") == rp.gaps
