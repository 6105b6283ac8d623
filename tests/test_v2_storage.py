"""GetMetricDataV2 end to end on real Postgres, through the real aiobotocore client
against the simulator: planner -> ConnectSource -> split by MetricInterval ->
writer -> the same views as v1. Exact values, NULLs where the API gave null,
nothing for an empty result, and a second run changes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from collector.adapters.connect import BotocoreConnect
from collector.adapters.postgres import PgStore, migrate
from collector.apis.v2 import catalog
from collector.apis.v2.api import V2Api
from collector.apis.v2.codec import CODEC
from collector.apis.v2.planner import newest_end
from collector.apis.v2.settings import V2ProfileSettings
from collector.apis.v2.unit import V2Window
from collector.clock import ManualClock
from collector.config import Settings
from collector.fetch import FetchContext, fetch_unit
from collector.fleet import RESOURCE_KINDS, discover_queues, discover_resource
from collector.model import SliceKey, Target
from collector.pipeline import PipelineOptions
from collector.ports import CompletedSlice
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy
from collector.runtime import Runtime
from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from tests.conftest import StartSim

COLS = ("instance_id, interval_start, interval_end, queue_id, channel, routing_profile_id, agent_id, "
        "metric_name, statistic, unit, threshold_comparison, threshold_value, metric_filters, value, "
        "dimensions, api, profile")


def _expected(sim: Simulator, windows: list[V2Window], now: dt.datetime) -> set[tuple[Any, ...]]:
    """The simulator's own answer for every request of every window, as view rows."""
    out: set[tuple[Any, ...]] = set()
    for w in windows:
        inst = sim.fleet.instances[w.target.instance_id]
        for req in w.requests:
            body = {**req.to_api(), "StartTime": int(req.start.timestamp()), "EndTime": int(req.end.timestamp())}
            parts = sim.v2.validate(body, now.timestamp())
            parts.pop("max_results")
            for res in sim.v2.results(inst, **parts):
                d = res["Dimensions"]
                mi = res["MetricInterval"]
                for c in res["Collections"]:
                    m = c["Metric"]
                    thr = (m.get("Threshold") or [None])[0]
                    mfs = [{"key": f["MetricFilterKey"], "values": f["MetricFilterValues"],
                            "negate": f.get("Negate", False)} for f in m.get("MetricFilters") or []]
                    out.add((
                        inst.id, mi["StartTime"], mi["EndTime"], d.get("QUEUE"), d.get("CHANNEL"),
                        d.get("ROUTING_PROFILE"), d.get("AGENT"), m["Name"], None,
                        catalog.METRICS[m["Name"]].unit, thr and thr["Comparison"],
                        thr and float(thr["ThresholdValue"]), json.dumps(mfs, sort_keys=True) if mfs else None,
                        c.get("Value"), json.dumps(d, sort_keys=True), "v2", w.profile,
                    ))
    return out


async def _stored(conn: asyncpg.Connection, profile: str) -> set[tuple[Any, ...]]:
    rows = await conn.fetch(f"SELECT {COLS} FROM historical_metrics WHERE profile = $1", profile)
    out = set()
    for r in rows:
        t = list(r.values())
        t[1], t[2] = int(t[1].timestamp()), int(t[2].timestamp())
        t[12] = json.dumps(json.loads(t[12]), sort_keys=True) if t[12] is not None else None
        t[14] = json.dumps(json.loads(t[14]), sort_keys=True)
        out.add(tuple(t))
    assert len(out) == len(rows)  # no duplicated value
    return out


async def _run(sim: Simulator, store: PgStore, profile: V2ProfileSettings, target: Target,
               start: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[V2Window]:
    """As the service does it: resolve the target (its STANDARD queues and the resources
    the profile needs, stored for joins), plan its windows, fetch each unit whole (every
    page of every request, each checked before it leaves, on a clock held at ``now``) and
    write a window's slices in one batch. The limiters pace on a clock of their own that
    never waits (the simulator does not throttle here), so ``now`` stays put."""
    api = V2Api(profile)
    clock = ManualClock(now)
    async with BotocoreConnect() as source:
        rt = Runtime(settings=Settings(), store=store, source=source, limiters=Limiters(clock=ManualClock(now)),
                     clock=clock, pipeline=PipelineOptions(), apis={profile.name: api})
        queues = tuple(q.id for q in await discover_queues(rt, target))
        found = [(kind, await discover_resource(rt, target, kind)) for kind in RESOURCE_KINDS if kind in api.needs]
        target = dataclasses.replace(target, queues=queues, resources=tuple(found))
        units = api.plan(target, start, end, now, 0)
        windows = [u for u in units if isinstance(u, V2Window)]
        assert len(windows) == len(units)
        ctx = FetchContext(source, rt.limiters, RetryPolicy(), clock, random.Random(0), Counters())
        for w in windows:
            await store.write(await fetch_unit(w, ctx), None)
    return windows


Stores = tuple[PgStore, asyncpg.Pool]


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    yield PgStore(pool), pool
    await pool.close()


async def test_agent_and_queue_15m_over_3_days_lands_exactly(start_sim: StartSim, stores: Stores) -> None:
    store, pool = stores
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=30, agents_per_instance=40), throttle=False))
    sim = h.sim
    inst = next(iter(sim.fleet.instances.values()))
    target = Target(inst.id, inst.region, inst.account, ())
    profile = V2ProfileSettings(
        name="agents_15m", api="v2", interval="15m", groupings=["AGENT", "QUEUE"],
        filters={"queues": "all", "agents": "all"},
        metrics=["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "AGENT_ANSWER_RATE",
                 {"name": "CONTACTS_HANDLED", "metric_filters": [{"key": "INITIATION_METHOD", "values": ["INBOUND"]}]}],  # type: ignore[list-item]  # pydantic validates the table
    )
    now = dt.datetime.fromtimestamp(sim.now(), dt.UTC)
    end = newest_end(now, "FIFTEEN_MIN", "UTC")
    start = end - dt.timedelta(days=3)
    windows = await _run(sim, store, profile, target, start, end, now)
    assert [len(w.slices) for w in windows] == [287, 1]
    assert all(len(w.requests) == 1 for w in windows)  # 30 queues + 40 agents fit one request
    want = _expected(sim, windows, now)
    async with pool.acquire() as conn:
        got = await _stored(conn, "agents_15m")
        assert got == want
        assert any(r[13] is None for r in got) and len(got) > 50_000
        assert sim.stats.by_status.get(400, 0) == 0 and not sim.stats.bad_requests  # nothing refused
        empty = await conn.fetchval("SELECT count(*) FROM collected_slices WHERE rows = 0")
        intervals_with_data = {r[1] for r in got}
        assert await conn.fetchval("SELECT count(*) FROM collected_slices") == 288
        assert empty == 288 - len(intervals_with_data)
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i "
            "WHERE i.inhparent = 'metric_values'::regclass")
        # the v1 layout (one float8[] row per group and metric set): ~200 bytes a row with its
        # primary-key entry, here shared by 4 values; v1's 25-metric rows come to ~16 bytes a value
        assert size / len(got) < 64
        before = await conn.fetch(f"SELECT {COLS}, collected_at FROM historical_metrics ORDER BY 1,2,4,7,8,13")
        # joins: the per-agent report of the README names every agent
        named = await conn.fetch(
            "SELECT DISTINCT a.username, a.first_name, a.last_name FROM historical_metrics h "
            "JOIN instances i ON i.instance_id = h.instance_id "
            "JOIN agents a ON a.instance_ref = i.ref AND a.agent_id = h.agent_id WHERE h.api = 'v2'")
        assert len(named) == 40 and all(r["first_name"] and r["last_name"] for r in named)
        # a second run changes nothing
        await _run(sim, store, profile, target, start, end, now)
        after = await conn.fetch(f"SELECT {COLS}, collected_at FROM historical_metrics ORDER BY 1,2,4,7,8,13")
        assert before == after
        assert await conn.fetchval("SELECT min(times_collected) FROM collected_slices") == 2
        # the wide view: one row per interval and (agent, queue), V2 values in v2_metrics
        wide = await conn.fetchrow(
            "SELECT api, agent_id, queue_id, v2_metrics, contacts_handled FROM historical_metrics_wide "
            "WHERE profile = 'agents_15m' LIMIT 1")
        assert wide["api"] == "v2" and wide["agent_id"] and wide["contacts_handled"] is None
        assert set(json.loads(wide["v2_metrics"])) >= {"CONTACTS_HANDLED", "AVG_HANDLE_TIME"}


@pytest.mark.parametrize(("now", "hours"), [
    (dt.datetime(2026, 3, 20, 15, tzinfo=dt.UTC), 23),  # spring forward, 2026-03-08
    (dt.datetime(2026, 11, 10, 15, tzinfo=dt.UTC), 25),  # fall back, 2026-11-01
])
async def test_day_slices_in_new_york_across_dst_are_exact(start_sim: StartSim, stores: Stores, now: dt.datetime, hours: int) -> None:
    store, pool = stores
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=4, agents_per_instance=6), throttle=False),
                        now=now.timestamp)
    sim = h.sim
    inst = next(iter(sim.fleet.instances.values()))
    target = Target(inst.id, inst.region, inst.account, ())
    profile = V2ProfileSettings(
        name="daily_ny", api="v2", interval="1d", time_zone="America/New_York", groupings=["QUEUE", "CHANNEL"],
        filters={"queues": "all", "channels": ["VOICE", "CHAT"]},
        metrics=["CONTACTS_HANDLED", "ABANDONMENT_RATE",
                 {"name": "SERVICE_LEVEL", "thresholds": [{"comparison": "LT", "value": 20},  # type: ignore[list-item]
                                                          {"comparison": "LTE", "value": 60}]}],
    )
    end = newest_end(now, "DAY", "America/New_York")
    start = end - dt.timedelta(days=14)
    start = start.astimezone(dt.UTC)
    from collector.apis.v2.planner import floor_boundary
    start = floor_boundary(start, "DAY", "America/New_York")
    windows = await _run(sim, store, profile, target, start, end, now)
    lengths = sorted({(k.end - k.start).total_seconds() / 3600 for w in windows for k in w.slices})
    assert lengths == sorted({24.0, float(hours)})
    async with pool.acquire() as conn:
        got = await _stored(conn, "daily_ny")
        assert got == _expected(sim, windows, now)
        spans = {(r[2] - r[1]) / 3600 for r in got}
        assert float(hours) in spans
        comps = {(r[10], r[11]) for r in got if r[7] == "SERVICE_LEVEL"}
        assert comps == {("LT", 20.0), ("LTE", 60.0)}
        assert all(r[8] is None for r in got)  # no statistic for V2


async def test_recollecting_a_slice_replaces_it(stores: Stores) -> None:
    store, pool = stores
    from collector.apis.v2.model import MetricV2

    ms = (MetricV2("CONTACTS_HANDLED", "COUNT"), MetricV2("AVG_HANDLE_TIME", "SECONDS"))
    t0 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    key = SliceKey("p", "inst-1", t0, t0 + dt.timedelta(minutes=15))
    a = (("AGENT", "a1"), ("QUEUE", "q1"))
    b = (("AGENT", "a2"), ("QUEUE", "q1"))
    at = dt.datetime(2026, 11, 20, 11, tzinfo=dt.UTC)
    await store.write([CompletedSlice(key, [(ms, [(a, [3.0, None]), (b, [1.0, 12.5])])], at, None, CODEC)], None)
    await store.write([CompletedSlice(key, [(ms, [(a, [4.0, 20.0])])], at, None, CODEC)], None)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT agent_id, metric_name, value FROM historical_metrics ORDER BY 1, 2")
        assert [tuple(r) for r in rows] == [("a1", "AVG_HANDLE_TIME", 20.0), ("a1", "CONTACTS_HANDLED", 4.0)]
        await store.write([CompletedSlice(key, [], at)], None)  # an empty result stores nothing
        assert await conn.fetchval("SELECT count(*) FROM historical_metrics") == 0
        assert await conn.fetchval("SELECT rows FROM collected_slices") == 0



async def test_a_90_day_backfill_runs_to_completion(start_sim: StartSim, stores: Stores) -> None:
    store, pool = stores
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=2, agents_per_instance=2), throttle=False))
    sim = h.sim
    inst = next(iter(sim.fleet.instances.values()))
    target = Target(inst.id, inst.region, inst.account, ())
    profile = V2ProfileSettings(
        name="hourly_90d", api="v2", interval="1h", time_zone="Europe/London", groupings=["AGENT"],
        filters={"agents": "all"}, metrics=["CONTACTS_HANDLED", "SUM_ONLINE_TIME_AGENT", "AGENT_OCCUPANCY"],
    )
    from collector.apis.v2.planner import oldest_start

    now = dt.datetime.fromtimestamp(sim.now(), dt.UTC)
    start, end = oldest_start(now, "HOUR", "Europe/London", margin=600), newest_end(now, "HOUR", "Europe/London")
    windows = await _run(sim, store, profile, target, start, end, now)
    n_slices = sum(len(w.slices) for w in windows)
    assert n_slices == int((end - start).total_seconds() // 3600) and len(windows) == -(-n_slices // 71)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collected_slices") == n_slices
        assert await _stored(conn, "hourly_90d") == _expected(sim, windows, now)
    assert not sim.stats.bad_requests
