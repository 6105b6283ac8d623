"""collector.scheduler.plan_round over the in-memory store, for both metric APIs: the
first round, catch-up (oldest first, the newest slice never starving), revisits, gaps;
and for GetMetricDataV2 profiles local days across DST, whole-window catch-up and gaps
past 90 days. One store read plans a whole round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.apis.v1.api import V1Api
from collector.model import ScheduleOptions, Series, SliceKey
from collector.ports import CompletedSlice, FetchUnit
from collector.scheduler import advance_frontiers, plan_round
from tests.fakes import InMemoryStore
from tests.unit.helpers import COLL, target

G = 900
NOW = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)  # 12:00:01
API = V1Api("default", COLL)
PROFILES = [API]
T = target()
SERIES = Series(T.instance_id, "default", G, (G, G))


async def _frontier(store: InMemoryStore) -> datetime | None:
    return store.frontiers.get((T.instance_id, "default", G))


async def _set_frontier(store: InMemoryStore, at: datetime) -> None:
    await store.set_frontiers([(SERIES, at)])


def _at(h: int, m: int) -> datetime:
    return NOW.replace(hour=h, minute=m, second=0)


def _starts(units: list[FetchUnit]) -> list[datetime]:
    return [k.start for u in units for k in u.slice_keys]


async def _collect(store: InMemoryStore, start: datetime, at: datetime) -> None:
    key = SliceKey("default", T.instance_id, start, start + timedelta(seconds=G))
    await store.write([CompletedSlice(key, [], at)], None)


async def test_the_first_round_backfills_and_sets_the_frontier() -> None:
    store = InMemoryStore()
    opts = ScheduleOptions(settle=900, initial_backfill=3600, revisits=(), max_sleep=3600)
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    # settled slices end at 11:45; an hour of backfill: 10:45, 11:00, 11:15, 11:30
    assert _starts(rp.units) == [_at(10, 45), _at(11, 0), _at(11, 15), _at(11, 30)]
    assert await _frontier(store) == _at(10, 45)
    assert rp.wake_at == _at(12, 15)  # the next slice settles at 12:00 + 15m


async def test_catch_up_takes_the_oldest_batch_and_the_newest_slice_and_goes_again_at_once() -> None:
    store = InMemoryStore()
    await _set_frontier(store, _at(6, 0))
    opts = ScheduleOptions(settle=900, catchup_batch=3, revisits=())
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    assert _starts(rp.units) == [_at(6, 0), _at(6, 15), _at(6, 30), _at(11, 30)]
    assert rp.wake_at == NOW  # more to catch up: no sleep


async def test_collected_slices_are_skipped_and_the_frontier_moves_over_them() -> None:
    store = InMemoryStore()
    await _set_frontier(store, _at(11, 0))
    await _collect(store, _at(11, 0), NOW)
    await _collect(store, _at(11, 15), NOW)
    opts = ScheduleOptions(settle=900, revisits=())
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    assert _starts(rp.units) == [_at(11, 30)]
    await advance_frontiers(store, [T], PROFILES, NOW, opts)
    assert await _frontier(store) == _at(11, 30)


async def test_slices_that_aged_out_of_the_lookback_become_gaps() -> None:
    store = InMemoryStore()
    await _set_frontier(store, NOW - timedelta(hours=30))
    opts = ScheduleOptions(settle=900, revisits=(), lookback_margin=600, catchup_batch=1)
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    gap_starts = sorted(s for (_i, _p, _g, s) in store.gaps)
    oldest_ok = _at(12, 15) - timedelta(hours=24)  # 12:00:01 - 24h + 10m, up to the slice
    assert rp.gaps == len(gap_starts) > 0
    assert gap_starts[-1] < oldest_ok <= gap_starts[-1] + timedelta(seconds=G)
    assert await _frontier(store) == oldest_ok
    assert _starts(rp.units)[0] == oldest_ok


async def test_a_slice_is_revisited_once_its_revisit_point_has_passed() -> None:
    store = InMemoryStore()
    await _set_frontier(store, _at(11, 45))
    await _collect(store, _at(10, 30), _at(10, 50))  # collected soon after it ended
    opts = ScheduleOptions(settle=900, revisits=(3600,))
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    assert _starts(rp.units) == [_at(10, 30)]  # 10:45 + 1h = 11:45 has passed
    await _collect(store, _at(10, 30), NOW)
    rp = await plan_round(store, [T], PROFILES, opts, NOW)
    assert rp.units == []  # revisited: nothing more due


async def test_an_unresolved_instance_s_due_slices_are_lost_with_its_reason_and_age_into_gaps() -> None:
    import dataclasses

    store = InMemoryStore()
    broken = dataclasses.replace(T, unresolved="queue discovery failed: AccessDenied")
    await _set_frontier(store, NOW - timedelta(hours=25))
    opts = ScheduleOptions(settle=900, catchup_batch=2, revisits=())
    rp = await plan_round(store, [broken], PROFILES, opts, NOW)
    assert rp.units == [] and rp.gaps > 0
    assert [k.start for k, _r in rp.lost] == [_at(12, 15) - timedelta(days=1), _at(12, 30) - timedelta(days=1),
                                             _at(11, 30)]
    assert {r for _k, r in rp.lost} == {"queue discovery failed: AccessDenied"}
