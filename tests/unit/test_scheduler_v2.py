"""The one scheduler with GetMetricDataV2 profiles, over the in-memory store (no Postgres,
no simulator): local days across DST, whole-window catch-up, gaps past 90 days, an
edited interval, a missing resource, and one store read for a whole round."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from collector.apis.v1.api import V1Api
from collector.apis.v2.api import V2Api
from collector.apis.v2.settings import V2ProfileSettings
from collector.model import ScheduleOptions, Series, SliceKey
from collector.ports import CompletedSlice, MetricApi
from collector.scheduler import advance_frontiers, plan_round
from tests.fakes import InMemoryStore
from tests.unit.helpers import COLL, target

pytestmark = pytest.mark.unit

T = target()
OPTS = ScheduleOptions(settle=900, revisits=(), max_sleep=3600)


def _v2(interval: str, tz: str = "UTC") -> V2Api:
    return V2Api(V2ProfileSettings.model_validate({
        "name": "agents", "api": "v2", "interval": interval, "time_zone": tz, "groupings": ["QUEUE"],
        "metrics": ["CONTACTS_HANDLED"], "filters": {"queues": "all"},
    }))


def _series(api: MetricApi) -> Series:
    return Series(T.instance_id, api.profile, api.calendar.seconds, api.calendar.lengths)


async def _collect(store: InMemoryStore, api: MetricApi, start: datetime, end: datetime, at: datetime) -> None:
    await store.write([CompletedSlice(SliceKey(api.profile, T.instance_id, start, end), [], at)], None)


async def test_local_days_cross_a_25_hour_dst_day_in_one_window() -> None:
    api = _v2("1d", "America/New_York")
    store = InMemoryStore()
    now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    oct31 = datetime(2026, 10, 31, 4, 0, tzinfo=UTC)  # local midnight, EDT
    await store.set_frontiers([(_series(api), oct31)])
    rp = await plan_round(store, [T], [api], OPTS, now)
    assert len(rp.units) == 1  # one window: every slice of it in the same requests
    keys = list(rp.units[0].slice_keys)
    assert [k.start for k in keys] == [oct31, oct31 + timedelta(hours=24), oct31 + timedelta(hours=49)]
    assert [k.seconds for k in keys] == [86400, 90000, 86400]  # 1 November is 25 hours long
    for k in keys:
        await _collect(store, api, k.start, k.end, now)
    await advance_frontiers(store, [T], [api], now, OPTS)
    assert store.frontiers[(T.instance_id, "agents", 86400)] == datetime(2026, 11, 3, 5, 0, tzinfo=UTC)
    assert (await plan_round(store, [T], [api], OPTS, now)).units == []


async def test_catch_up_takes_whole_windows_oldest_first_and_the_newest_window() -> None:
    api = _v2("15m")
    store = InMemoryStore()
    now = datetime(2026, 3, 20, 12, 0, 1, tzinfo=UTC)
    await store.set_frontiers([(_series(api), now.replace(second=1) - timedelta(days=10, seconds=1))])
    rp = await plan_round(store, [T], [api], dataclasses.replace(OPTS, catchup_batch=2), now)
    assert len(rp.units) == 3 and rp.more and rp.wake_at == now
    first, second, newest = (list(u.slice_keys) for u in rp.units)
    assert len(first) == len(second) == 287  # as much range per request as the API allows (< 3 days)
    assert first[-1].end == second[0].start
    assert newest[-1].end == datetime(2026, 3, 20, 11, 45, tzinfo=UTC)  # settled: 12:00:01 - 15m


async def test_slices_past_90_days_become_gaps_and_the_frontier_moves_to_the_edge() -> None:
    api = _v2("1h")
    store = InMemoryStore()
    now = datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC)
    await store.set_frontiers([(_series(api), datetime(2026, 2, 20, tzinfo=UTC))])
    rp = await plan_round(store, [T], [api], dataclasses.replace(OPTS, catchup_batch=1), now)
    edge = datetime(2026, 3, 3, 12, 10, 1, tzinfo=UTC)  # now - 90 days + the 10-minute margin
    gaps = sorted(s for (_i, _p, _g, s) in store.gaps)
    assert rp.gaps == len(gaps) > 0 and gaps[0] == datetime(2026, 2, 20, tzinfo=UTC)
    assert gaps[-1] < edge <= gaps[-1] + timedelta(hours=1)
    assert {r for r in store.gaps.values()} == {"aged out of the 90-day lookback before collection"}
    assert store.frontiers[(T.instance_id, "agents", 3600)] == datetime(2026, 3, 3, 13, tzinfo=UTC)
    assert rp.units[0].slice_keys[0].start == datetime(2026, 3, 3, 13, tzinfo=UTC)


async def test_an_edited_interval_does_not_count_the_old_slices_as_collected() -> None:
    quarter, hourly = _v2("15m"), _v2("1h")
    store = InMemoryStore()
    now = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i in range(8):  # 09:00-11:00 collected as 15-minute slices
        s = start + timedelta(minutes=15 * i)
        await _collect(store, quarter, s, s + timedelta(minutes=15), now)
    await store.set_frontiers([(_series(hourly), start)])
    rp = await plan_round(store, [T], [hourly], OPTS, now)
    assert [k.start for u in rp.units for k in u.slice_keys] == [start + timedelta(hours=h) for h in range(2)]


async def test_a_resource_that_could_not_be_discovered_fails_only_the_profiles_that_need_it() -> None:
    agents = V2Api(V2ProfileSettings(name="by_agent", api="v2", interval="1h", groupings=["AGENT"],
                                     metrics=["CONTACTS_HANDLED"], filters={"agents": "all"}))
    queues = V1Api("default", COLL)
    t = dataclasses.replace(T, missing=(("agents", "AccessDenied (403): not authorized"),))
    store = InMemoryStore()
    now = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    rp = await plan_round(store, [t], [agents, queues], dataclasses.replace(OPTS, initial_backfill=3600), now)
    assert {k.profile for k, _r in rp.lost} == {"by_agent"}
    assert all("agents discovery failed: AccessDenied" in r for _k, r in rp.lost)
    assert {k.profile for u in rp.units for k in u.slice_keys} == {"default"}


async def test_a_round_of_many_instances_and_both_apis_reads_the_store_once() -> None:
    targets = [target(f"i-{n}") for n in range(50)]
    store = InMemoryStore()
    now = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    rp = await plan_round(store, targets, [V1Api("default", COLL), _v2("1h")], OPTS, now)
    assert store.state_reads == 1
    assert {k.instance_id for u in rp.units for k in u.slice_keys} == {t.instance_id for t in targets}
    assert len(store.frontiers) == 100  # every new series' frontier, written in the same round


def test_a_filter_on_an_agent_the_instance_does_not_have_is_warned_once() -> None:
    """Issue 18 item 9: listed agent IDs are discovered too, and one the instance does not
    have is reported (before: success with 0 rows and no word)."""
    from structlog.testing import capture_logs

    api = V2Api(V2ProfileSettings(name="by_agent", api="v2", interval="1h", groupings=["AGENT"],
                                  metrics=["CONTACTS_HANDLED"], filters={"agents": ["a-1", "ghost"]}))
    assert "agents" in api.needs
    t = dataclasses.replace(T, resources=(("agents", ("a-1", "a-2")),))
    now = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with capture_logs() as logs:
        api.plan(t, start, start + timedelta(hours=1), now, 600)
        api.plan(t, start, start + timedelta(hours=1), now, 600)
    warned = [e for e in logs if e["event"] == "filter_ids_unknown"]
    assert len(warned) == 1 and warned[0]["ids"] == ["ghost"] and warned[0]["filter"] == "AGENT", logs
