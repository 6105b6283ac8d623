"""The V2 scheduler's rounds on real Postgres with a hand-driven clock: whole windows for
catch-up (a 90-day initial backfill), watermarks keyed on the nominal interval across
23/25-hour DST days, and gaps when a slice ages out of the 90 days."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from collector.adapters.postgres import PgStore, migrate
from collector.adapters.postgres_v2 import PgStoreV2
from collector.model import Target
from collector.scheduler import ScheduleOptions
from collector.v2.model import CompletedSliceV2, V2Window
from collector.v2.planner import nominal_seconds, oldest_start
from collector.v2.schedule import advance_frontiers, plan_round
from collector.v2.settings import V2ProfileSettings

T = Target("inst-1", "us-east-1", "111111111111", ("q1", "q2"))
RES = {"inst-1": {"QUEUE": ["q1", "q2"]}}


def _profile(interval: str, tz: str = "UTC", backfill: str | None = None) -> V2ProfileSettings:
    return V2ProfileSettings(name=f"p_{interval}", api="v2", interval=interval, time_zone=tz,  # type: ignore[arg-type]
                             groupings=["QUEUE"], filters={"queues": "all"}, metrics=["CONTACTS_HANDLED"],
                             initial_backfill=backfill)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[PgStore, PgStoreV2]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    store = PgStore(pool)
    yield store, PgStoreV2(store)
    await pool.close()


async def _collect(store2: PgStoreV2, windows: list[V2Window], at: dt.datetime) -> None:
    for w in windows:  # as the pipeline does: a window's slices in one batch
        await store2.write([CompletedSliceV2(k, [], at) for k in w.slices], None)


async def test_a_90_day_backfill_is_caught_up_in_whole_windows(stores: tuple[PgStore, PgStoreV2]) -> None:
    store, store2 = stores
    now = dt.datetime(2026, 11, 26, 12, 7, tzinfo=dt.UTC)
    prof = _profile("1h", "Europe/London", backfill="90d")
    opts = ScheduleOptions(settle=900, revisits=(), catchup_batch=4, lookback_margin=600)
    rp = await plan_round(store, store2, [T], [prof], RES, opts, now)
    oldest = oldest_start(now, "HOUR", "Europe/London", 600)
    assert rp.windows[0].start == oldest  # 90 days back, inside the margin
    # 4 windows of catch-up (71 hours each: a request covers < 3 days) and the newest slice
    assert [len(w.slices) for w in rp.windows[:4]] == [71] * 4 and len(rp.windows) == 5
    assert rp.windows[-1].end == dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC)
    assert rp.more and rp.wake_at == now and all(len(w.requests) == 1 for w in rp.windows)
    rounds = 1
    while rp.more:
        await _collect(store2, rp.windows, now)
        await advance_frontiers(store, store2, [T], [prof], now, opts)
        rp = await plan_round(store, store2, [T], [prof], RES, opts, now)
        rounds += 1
    await _collect(store2, rp.windows, now)
    await advance_frontiers(store, store2, [T], [prof], now, opts)
    assert rounds == 7  # 2158 hours: 31 windows of up to 71, four a round and the newest
    hours = int((dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC) - oldest).total_seconds() // 3600)
    assert len(await store2.collected_starts_v2("inst-1", prof.name, oldest, now)) == hours
    assert await store.frontier("inst-1", prof.name, 3600) == dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC)
    assert (await plan_round(store, store2, [T], [prof], RES, opts, now)).windows == []


async def test_day_watermarks_cross_a_25_hour_day(stores: tuple[PgStore, PgStoreV2]) -> None:
    store, store2 = stores
    tz = "America/New_York"
    prof = _profile("1d", tz, backfill="10d")
    opts = ScheduleOptions(settle=900, revisits=(3600,), catchup_batch=16, lookback_margin=600)
    now = dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC)
    rp = await plan_round(store, store2, [T], [prof], RES, opts, now)
    lengths = [(k.end - k.start).total_seconds() / 3600 for w in rp.windows for k in w.slices]
    assert len(lengths) == 9 and 25.0 in lengths  # 240 hours back, rounded up to local midnight: and set(lengths) == {24.0, 25.0}
    await _collect(store2, rp.windows, now)
    await advance_frontiers(store, store2, [T], [prof], now, opts)
    today = dt.datetime(2026, 11, 5, 5, tzinfo=dt.UTC)  # local midnight, EST
    assert await store.frontier("inst-1", prof.name, nominal_seconds("DAY")) == today
    # the next local day, once settled: only the new slice, then its revisit an hour after its end
    nxt = dt.datetime(2026, 11, 6, 5, 20, tzinfo=dt.UTC)
    rp = await plan_round(store, store2, [T], [prof], RES, opts, nxt)
    assert [(w.start, len(w.slices)) for w in rp.windows] == [(today, 1)]
    await _collect(store2, rp.windows, nxt)
    await advance_frontiers(store, store2, [T], [prof], nxt, opts)
    assert (await plan_round(store, store2, [T], [prof], RES, opts, nxt)).windows == []
    again = await plan_round(store, store2, [T], [prof], RES, opts, nxt + dt.timedelta(hours=1))
    assert [(w.start, len(w.slices)) for w in again.windows] == [(today, 1)]


async def test_slices_that_age_out_of_90_days_become_gaps(stores: tuple[PgStore, PgStoreV2]) -> None:
    store, store2 = stores
    prof = _profile("1d", "UTC", backfill="3d")
    opts = ScheduleOptions(settle=900, revisits=(), catchup_batch=16, lookback_margin=600)
    t0 = dt.datetime(2026, 8, 1, 12, tzinfo=dt.UTC)
    first = await plan_round(store, store2, [T], [prof], RES, opts, t0)
    assert sum(len(w.slices) for w in first.windows) == 3
    # the collector was away for 100 days: what it never collected and is now past 90 days is a gap
    now = t0 + dt.timedelta(days=100)
    rp = await plan_round(store, store2, [T], [prof], RES, opts, now)
    oldest = oldest_start(now, "DAY", "UTC", 600)
    assert rp.gaps == (oldest - dt.datetime(2026, 7, 29, tzinfo=dt.UTC)).days
    assert rp.windows[0].start == oldest
    async with store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collection_gaps WHERE slice_seconds = 86400") == rp.gaps
