"""Editing a profile's interval or time zone starts a new series cleanly (issue 18 item 1),
on real Postgres: the old slices stay stored but no longer count as collected nor come due
for revisits, and the store says so in the log when it sees the change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

from collector.adapters.postgres import PgStore, migrate
from collector.apis.v2.api import V2Api
from collector.apis.v2.settings import V2ProfileSettings
from collector.model import ScheduleOptions, SliceKey, Target
from collector.ports import CompletedSlice
from collector.scheduler import plan_round

T = Target("inst-1", "us-east-1", "111111111111", ("q1",))
NOW = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)


def _api(interval: str, tz: str = "UTC") -> V2Api:
    return V2Api(V2ProfileSettings.model_validate({
        "name": "queues", "api": "v2", "interval": interval, "time_zone": tz, "groupings": ["QUEUE"],
        "metrics": ["CONTACTS_HANDLED"], "filters": {"queues": "all"},
    }))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    yield PgStore(pool)
    await pool.close()


async def test_an_edited_interval_logs_the_change_and_starts_a_new_series(store: PgStore) -> None:
    quarter, hourly = _api("15m"), _api("1h")
    await store.register_profile("queues", quarter.info)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i in range(8):  # 09:00-11:00 collected as 15-minute slices, long before their revisit
        s = start + timedelta(minutes=15 * i)
        await store.write([CompletedSlice(SliceKey("queues", T.instance_id, s, s + timedelta(minutes=15)), [],
                                          s + timedelta(minutes=20))], None)
    with capture_logs() as logs:
        await store.register_profile("queues", quarter.info)  # unchanged: nothing said
    assert [e for e in logs if e["event"] == "profile_changed"] == []
    with capture_logs() as logs:
        await store.register_profile("queues", hourly.info)
    (changed,) = [e for e in logs if e["event"] == "profile_changed"]
    assert changed["was"] == "v2 15m UTC" and changed["now"] == "v2 1h UTC"

    opts = ScheduleOptions(settle=900, revisits=(3600,), initial_backfill=3 * 3600, max_sleep=3600)
    rp = await plan_round(store, [T], [hourly], opts, NOW)
    starts = [k.start for u in rp.units for k in u.slice_keys]
    # the hours are due though 15-minute slices start at each of them, and none of the old
    # 15-minute slices comes due for a revisit
    assert starts == [start + timedelta(hours=h) for h in (-1, 0, 1)]  # 08:00-11:00, 3 h back
    assert all(k.seconds == 3600 for u in rp.units for k in u.slice_keys)
    assert await store.pool.fetchval("SELECT count(*) FROM collected_slices WHERE slice_seconds = 900") == 8


async def test_an_edited_time_zone_with_a_half_hour_offset_does_not_take_old_hours_for_new(store: PgStore) -> None:
    utc, india = _api("1h"), _api("1h", "Asia/Kolkata")  # UTC+05:30: hours start at :30 UTC
    await store.register_profile("queues", utc.info)
    s = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await store.write([CompletedSlice(SliceKey("queues", T.instance_id, s, s + timedelta(hours=1)), [], NOW)], None)
    with capture_logs() as logs:
        await store.register_profile("queues", india.info)
    assert [e["now"] for e in logs if e["event"] == "profile_changed"] == ["v2 1h Asia/Kolkata"]
    opts = ScheduleOptions(settle=900, revisits=(), initial_backfill=3 * 3600, max_sleep=3600)
    rp = await plan_round(store, [T], [india], opts, NOW)
    starts = [k.start for u in rp.units for k in u.slice_keys]
    assert starts and all(t.minute == 30 for t in starts)
