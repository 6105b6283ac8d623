"""Real-time snapshots on real Postgres: the latest per dimension group replaced by each
snapshot (a late, older one never overwrites it), the history in day partitions with its
own retention, a snapshot written twice stored once, agent state intervals from the API's
status start times, and the views with names joined."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from collector.adapters.postgres import PgStore, connect_pool, migrate
from collector.apis.current.codec import AGENTS, CURRENT
from collector.apis.current.model import AgentState
from collector.model import ProfileInfo, QueueInfo, Series, SliceKey
from collector.ports import CompletedSlice
from collector.sqlfiles import q

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
METRICS = (("CONTACTS_IN_QUEUE", "COUNT"), ("OLDEST_CONTACT_AGE", "SECONDS"), ("AGENTS_AVAILABLE", "COUNT"))


def _dims(q: str, ch: str = "VOICE") -> tuple[str | None, ...]:
    return (q, ch, None, None, None, None, None)


def _queues(at: datetime, rows: dict[str, list[float | None]], instance: str = "i-1") -> CompletedSlice:
    key = SliceKey("now", instance, at, at + timedelta(seconds=15))
    page = [(_dims(q), v) for q, v in rows.items()]
    return CompletedSlice(key, [(METRICS, page)] if page else [], at + timedelta(seconds=1), None, CURRENT,
                          taken_at=at + timedelta(seconds=0.5))


def _agent(aid: str, status: str, since: datetime) -> AgentState:
    return AgentState(aid, status, None, since, "rp-1", "g-1", None, "[]", "{}")


def _agents(at: datetime, agents: list[AgentState]) -> CompletedSlice:
    key = SliceKey("who", "i-1", at, at + timedelta(seconds=15))
    return CompletedSlice(key, [("agents", [(a, []) for a in agents])] if agents else [], at + timedelta(seconds=1),
                          None, AGENTS, taken_at=at + timedelta(seconds=1))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[PgStore, asyncpg.Connection]]:
    pool = await connect_pool(database_url, 2)
    conn = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as c:
            await migrate(c)
        s = PgStore(pool)
        await s.register_profile("now", ProfileInfo("current", "15s", 15, None, "UTC"))
        await s.register_profile("who", ProfileInfo("agents", "15s", 15, None, "UTC"))
        await s.save_instance("i-1", "us-east-1", "111111111111", None, "east")
        await s.save_queues("i-1", "us-east-1", "111111111111", [QueueInfo("q-1", "arn:q-1", "Sales")])
        yield s, conn
    finally:
        await conn.close()
        await pool.close()


async def test_now_is_the_latest_snapshot_and_history_keeps_every_one(store: tuple[PgStore, asyncpg.Connection]) -> None:
    s, conn = store
    r1 = await s.write([_queues(T0, {"q-1": [3.0, 40.0, 2.0], "q-2": [1.0, 5.0, 0.0]})], None)
    assert (r1.rows, r1.values) == (2, 6)
    await s.write([_queues(T0 + timedelta(seconds=15), {"q-1": [4.0, 55.0, 1.0]})], None)
    now = await conn.fetch("SELECT instance_name, queue_id, queue_name, channel, contacts_in_queue, "
                           "oldest_contact_age, agents_available, agents_online, snapshot_at FROM current_queue_now")
    assert [tuple(r) for r in now] == [
        ("east", "q-1", "Sales", "VOICE", 4.0, 55.0, 1.0, None, T0 + timedelta(seconds=15.5))]  # q-2 left
    hist = await conn.fetch("SELECT slice_start, queue_id, contacts_in_queue FROM current_queue_history "
                            "ORDER BY 1, 2")
    assert [tuple(r) for r in hist] == [(T0, "q-1", 3.0), (T0, "q-2", 1.0), (T0 + timedelta(seconds=15), "q-1", 4.0)]
    # a late write of the older snapshot (a retry) changes neither now nor the history's count
    await s.write([_queues(T0, {"q-1": [3.0, 40.0, 2.0], "q-2": [1.0, 5.0, 0.0]})], None)
    assert await conn.fetchval("SELECT count(*) FROM current_queue_history") == 3
    assert await conn.fetchval("SELECT contacts_in_queue FROM current_queue_now") == 4.0
    assert await conn.fetchval("SELECT count(*) FROM collected_slices") == 2


async def test_agent_states_become_exact_intervals(store: tuple[PgStore, asyncpg.Connection]) -> None:
    s, conn = store
    avail, acw = T0 - timedelta(minutes=3), T0 + timedelta(seconds=20)
    await s.write([_agents(T0, [_agent("a-1", "Available", avail), _agent("a-2", "Lunch", avail)])], None)
    assert [tuple(r) for r in await conn.fetch("SELECT agent_id, status, status_since FROM agent_now ORDER BY 1")] \
        == [("a-1", "Available", avail), ("a-2", "Lunch", avail)]
    await s.write([_agents(T0 + timedelta(seconds=30), [_agent("a-1", "ACW", acw), _agent("a-2", "Lunch", avail)])],
                  None)
    await s.write([_agents(T0 + timedelta(seconds=45), [_agent("a-1", "ACW", acw)])], None)  # a-2 logged out
    rows = await conn.fetch("SELECT agent_id, status, started_at, ended_at FROM agent_state_intervals_view "
                            "ORDER BY 1, 3")
    assert [tuple(r) for r in rows] == [
        ("a-1", "Available", avail, acw),  # ended when the next status started, not when seen
        ("a-1", "ACW", acw, None),
        ("a-2", "Lunch", avail, T0 + timedelta(seconds=46)),  # gone at the first snapshot without it
    ]
    # an agent last seen long before the next snapshot (the collector was away) ended when last seen
    await s.write([_agents(T0 + timedelta(minutes=10), [])], None)
    assert await conn.fetchval("SELECT ended_at FROM agent_state_intervals WHERE status = 'ACW'") == \
        T0 + timedelta(seconds=46)
    assert await conn.fetchval("SELECT count(*) FROM agent_now") == 0  # nobody in the newest snapshot
    # a retried write of an older snapshot changes neither now nor the intervals
    await s.write([_agents(T0 + timedelta(seconds=45), [_agent("a-1", "ACW", acw)])], None)
    assert await conn.fetchval("SELECT count(*) FROM agent_now") == 0
    assert await conn.fetchval("SELECT ended_at FROM agent_state_intervals WHERE status = 'ACW'") == \
        T0 + timedelta(seconds=46)
    assert await conn.fetchval("SELECT count(*) FROM agent_snapshots") == 5


async def test_the_real_time_history_has_its_own_retention(store: tuple[PgStore, asyncpg.Connection]) -> None:
    s, conn = store
    old, new = T0 - timedelta(days=8), T0
    await s.write([_queues(old, {"q-1": [1.0, 1.0, 1.0]}), _queues(new, {"q-1": [2.0, 2.0, 2.0]})], None)
    lunch = old + timedelta(seconds=10)
    await s.write([_agents(old, [_agent("a-1", "Available", old)]),
                   _agents(old + timedelta(seconds=15), [_agent("a-1", "Lunch", lunch)]),
                   _agents(new, [_agent("a-1", "ACW", new)])], None)  # one batch: applied in order
    dropped = await s.prune(None, T0 - timedelta(days=7))
    assert sorted(dropped) == [f"agent_snapshots_{old:%Y%m%d}", f"current_values_{old:%Y%m%d}"]
    assert await conn.fetchval("SELECT count(*) FROM current_values") == 1
    assert await conn.fetchval("SELECT count(*) FROM collected_slices") == 2  # the two recent snapshots
    assert await conn.fetchval("SELECT contacts_in_queue FROM current_queue_now") == 2.0
    # the interval that ended 8 days ago is gone; the one that ended since and the open one stay
    rows = await conn.fetch("SELECT status, ended_at FROM agent_state_intervals ORDER BY started_at")
    assert [tuple(r) for r in rows] == [("Lunch", new), ("ACW", None)]


def _in_acw(aid: str, since: datetime, *acw: tuple[str, datetime]) -> AgentState:
    """An agent whose status is Available since ``since`` with contacts in ACW (ENDED)."""
    return AgentState(aid, "Available", None, since, "rp-1", "g-1", None, "[]", "{}",
                      tuple((cid, t, "VOICE", "q-1") for cid, t in acw))


async def test_after_contact_work_becomes_intervals_of_its_own(store: tuple[PgStore, asyncpg.Connection]) -> None:
    s, conn = store
    avail = T0 - timedelta(minutes=5)
    e1, e2 = T0 - timedelta(seconds=4), T0 + timedelta(seconds=22)
    snaps = [
        [_in_acw("a-1", avail, ("c-1", e1))],  # ACW of c-1 since it ended
        [_in_acw("a-1", avail, ("c-1", e1))],
        [_in_acw("a-1", avail, ("c-2", e2))],  # c-1's work done by now, c-2's begun
        [_in_acw("a-1", avail)],
    ]
    for k, agents in enumerate(snaps):
        await s.write([_agents(T0 + timedelta(seconds=15 * k), agents)], None)
    rows = await conn.fetch("SELECT agent_id, contact_id, channel, queue_name, started_at, ended_at, last_seen_at, "
                            "seconds FROM agent_acw_intervals_view ORDER BY started_at")
    seen = [T0 + timedelta(seconds=15 * k + 1) for k in range(4)]  # each snapshot's time
    assert [tuple(r) for r in rows] == [
        ("a-1", "c-1", "VOICE", "Sales", e1, seen[2], seen[1], (seen[2] - e1).total_seconds()),
        ("a-1", "c-2", "VOICE", "Sales", e2, seen[3], seen[2], (seen[3] - e2).total_seconds()),
    ]
    # the status interval is untouched by ACW; both kinds in one view
    kinds = await conn.fetch("SELECT kind, status, contact_id, started_at, ended_at FROM agent_intervals_view "
                             "ORDER BY kind, started_at")
    assert [tuple(r) for r in kinds] == [("acw", "ACW", "c-1", e1, seen[2]), ("acw", "ACW", "c-2", e2, seen[3]),
                                         ("status", "Available", None, avail, None)]
    # ACW ongoing when the collector went away ends when last seen; a retried older snapshot changes nothing
    e3 = T0 + timedelta(seconds=50)
    await s.write([_agents(T0 + timedelta(seconds=60), [_in_acw("a-1", avail, ("c-3", e3))])], None)
    await s.write([_agents(T0 + timedelta(minutes=10), [_in_acw("a-1", avail)])], None)
    await s.write([_agents(T0 + timedelta(seconds=60), [_in_acw("a-1", avail, ("c-3", e3))])], None)
    assert await conn.fetchval("SELECT ended_at FROM agent_acw_intervals WHERE contact_id = 'c-3'") == \
        T0 + timedelta(seconds=61)
    # retention: ACW that ended before the live cutoff goes
    await s.prune(None, T0 + timedelta(seconds=40))
    assert [r["contact_id"] for r in await conn.fetch("SELECT contact_id FROM agent_acw_intervals ORDER BY 1")] == \
        ["c-2", "c-3"]


async def test_a_long_outage_of_a_live_profile_is_one_gap_row(store: tuple[PgStore, asyncpg.Connection]) -> None:
    s, conn = store
    await s.register_profile("hist", ProfileInfo("v1", "15m", 900, None, "UTC"))
    live, hist = Series("i-1", "now", 15, (15, 15)), Series("i-1", "hist", 900, (900, 900))
    week = [T0 + timedelta(seconds=15 * k) for k in range(7 * 24 * 240)]  # a week of 15 s periods
    why = "aged out of the 15-second lookback before collection"
    await s.record_gaps(live, week, why, T0)
    end = T0 + timedelta(days=7)
    rows = await conn.fetch("SELECT profile, interval_start, interval_end, reason FROM collection_gaps_view")
    assert [tuple(r) for r in rows] == [("now", T0, end, why)]
    assert [tuple(r) for r in await conn.fetch(
        "SELECT kind, interval_start, interval_end FROM collection_problems WHERE profile = 'now'")] == \
        [("gap", T0, end)]
    # recorded again in part (a round that did not save its frontier) and extended: still one row
    more = [end - timedelta(minutes=1) + timedelta(seconds=15 * k) for k in range(8)]
    await s.record_gaps(live, more, why, T0)
    later = [end + timedelta(hours=1)]  # a separate outage stays a row of its own
    await s.record_gaps(live, later, why, T0)
    rows = await conn.fetch("SELECT interval_start, interval_end FROM collection_gaps_view ORDER BY 1")
    assert [tuple(r) for r in rows] == [(T0, end + timedelta(minutes=1)), (later[0], later[0] + timedelta(seconds=15))]
    # a historical profile's gaps stay one row per slice
    await s.record_gaps(hist, [T0, T0 + timedelta(minutes=15)], "aged out", T0)
    assert await conn.fetchval("SELECT count(*) FROM collection_gaps_view WHERE profile = 'hist'") == 2
    # retention keeps a range until its end is past the cutoff
    await s.prune(None, end)
    assert await conn.fetchval("SELECT count(*) FROM collection_gaps_view WHERE profile = 'now'") == 2
    await s.prune(None, end + timedelta(minutes=1))
    assert await conn.fetchval("SELECT count(*) FROM collection_gaps_view WHERE profile = 'now'") == 1


async def test_the_live_prune_reads_its_rows_by_profile_and_start(store: tuple[PgStore, asyncpg.Connection]) -> None:
    """Each delete of prune_live_bookkeeping can be served by an index (what the planner
    picks without sequential scans is an index on its predicate, not a filter over all rows)."""
    _s, conn = store
    await conn.execute("SET enable_seqscan = off")
    async with conn.transaction():
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + q("prune_live_bookkeeping"), T0)
    text = plan if isinstance(plan, str) else orjson.dumps(plan).decode()
    deletes = {str(n["Relation Name"]): n["Plans"] for n in _nodes(orjson.loads(text))
               if n.get("Node Type") == "ModifyTable"}
    assert set(deletes) == {"collected_slices", "collection_gaps", "agent_state_intervals", "agent_acw_intervals"}
    bound = {"collected_slices": "slice_start", "collection_gaps": "slice_start",
             "agent_state_intervals": "ended_at", "agent_acw_intervals": "ended_at"}
    for table, plans in deletes.items():
        conds = [str(n["Index Cond"]) for n in _nodes(plans) if "Index Cond" in n]
        assert any(bound[table] in c for c in conds), (table, conds)  # the index range is the cutoff
    assert {n.get("Index Name") for n in _nodes(orjson.loads(text))} >= {
        "collected_slices_profile_start", "collection_gaps_profile_start"}


def _nodes(plan: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    stack = [plan]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            out.append(x)
            stack.extend(v for v in x.values() if isinstance(v, list | dict))
    return out
