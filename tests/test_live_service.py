"""Real time through a real ``collector serve`` against the simulator: queue snapshots and
agent states land every period, the latest and the history agree with what the simulator
served at each snapshot's time, agent state intervals are the simulator's, the gauges
are on /metrics; a database outage and a kill -9 lose only the periods they lasted, and
polling goes on."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from collector.apis.current import catalog
from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from tests.conftest import StartSim, write_config
from tests.procs import PrivatePostgres, ServeProcs, sql_value, wait_sql

EVERY = 5
_LIVE = f'''
[scheduler]
initial_backfill = "30m"
revisits = []
retry_after = "1s"

[[profiles]]
name = "queues_now"
api = "current"
every = "{EVERY}s"

[[profiles]]
name = "agents_now"
api = "agents"
every = "{EVERY}s"
'''
_V1 = 'granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED"]\nservice_levels = []'
_COLUMNS = [m.lower() for m in catalog.DEFAULT_METRICS]
_README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _fleet(instances: int = 2) -> SimulatorConfig:
    return SimulatorConfig(fleet=FleetSpec(instances_per_account=instances, queues_per_instance=4), throttle=False)


async def _snapshots(url: str, n: int, limit: float = 90) -> None:
    """Until every instance has ``n`` queue snapshots and ``n`` agent snapshots."""
    await wait_sql(url, "SELECT min(n) FROM (SELECT count(*) AS n FROM collected_slices c JOIN profiles p"
                        " ON p.id = c.profile_id WHERE p.api IN ('current', 'agents')"
                        " GROUP BY c.instance_ref, c.profile_id) x"
                        " HAVING count(*) = (SELECT 2 * count(*) FROM instances)",
                   lambda v: v >= n, limit)


async def _check_queue_history(url: str, sim: Simulator) -> int:
    """Every stored queue snapshot equals what the simulator serves at its snapshot time."""
    snaps = await _fetch(url, "SELECT DISTINCT instance_id, slice_start, snapshot_at FROM current_queue_history")
    for s in snaps:
        inst = sim.fleet.instances[s["instance_id"]]
        want = sim.expected_current(inst.id, s["snapshot_at"].timestamp(), ["QUEUE", "CHANNEL"],
                                    {"Queues": sorted(inst.queues), "Channels": ["VOICE", "CHAT", "TASK"]},
                                    list(catalog.DEFAULT_METRICS))
        rows = await _fetch(url, f"SELECT queue_id, channel, {', '.join(_COLUMNS)} FROM current_queue_history"
                                 " WHERE instance_id = $1 AND slice_start = $2", inst.id, s["slice_start"])
        got = {(r["queue_id"], r["channel"]): [r[c] for c in _COLUMNS] for r in rows}
        expect = {(k["QUEUE"], k["CHANNEL"]): [v.get(m) for m in catalog.DEFAULT_METRICS] for k, v in want}
        assert got == expect, (inst.id, s["snapshot_at"])
    return len(snaps)


async def test_serve_polls_queues_and_agents_every_period_exactly(
    start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    h = await start_sim(_fleet())
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=_V1, extra=_LIVE)
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    await _snapshots(database_url, 4)
    started = await sql_value(database_url, "SELECT min(slice_start) FROM current_values")

    # every snapshot exact; "now" is the newest of each instance
    assert await _check_queue_history(database_url, h.sim) >= 8
    stale = await sql_value(database_url, """
        SELECT count(*) FROM current_latest l
        WHERE l.slice_start < (SELECT max(slice_start) FROM current_values v
                               WHERE v.instance_ref = l.instance_ref AND v.profile_id = l.profile_id)""")
    assert stale == 0
    now_rows = await _fetch(database_url, "SELECT instance_id, queue_id, channel, contacts_in_queue, "
                                          "oldest_contact_age, agents_available FROM current_queue_now")
    assert now_rows and all(r["queue_id"] in h.sim.fleet.instances[r["instance_id"]].queues for r in now_rows)

    # agents: every agent the simulator lists, in the state it says, and exact state intervals
    acw_seen = 0
    for inst in h.sim.fleet.instances.values():
        snap = await sql_value(database_url, "SELECT max(snapshot_at) FROM agent_now WHERE instance_id = $1", inst.id)
        served = h.sim.expected_user_data(inst.id, snap.timestamp(), {"RoutingProfiles": inst.routing_profiles})
        rows = await _fetch(database_url, "SELECT agent_id, agent_name, status, status_since FROM agent_now"
                                          " WHERE instance_id = $1", inst.id)
        assert {r["agent_id"] for r in rows} == {u["User"]["Id"] for u in served}
        assert all(r["agent_name"] != r["agent_id"] for r in rows)  # names from SearchUsers
        sim_intervals = {(a, st, f): t for a, st, f, t in h.sim.agent_status_intervals(
            inst.id, started.timestamp() - 3600, snap.timestamp() + 1)}
        stored = await _fetch(database_url, "SELECT agent_id, status, started_at, ended_at FROM"
                                            " agent_state_intervals_view WHERE instance_id = $1", inst.id)
        assert stored
        for r in stored:
            key = (r["agent_id"], r["status"], int(r["started_at"].timestamp()))
            assert key in sim_intervals, key
            if r["ended_at"] is not None and r["status"] is not None:
                assert int(r["ended_at"].timestamp()) == sim_intervals[key], key
        # after-contact work: every contact the simulator had in ACW at a stored snapshot is an
        # interval from its exact start, ended by the first snapshot after the work was done
        snaps = sorted(r["snapshot_at"].timestamp() for r in await _fetch(
            database_url, "SELECT DISTINCT a.snapshot_at FROM agent_snapshots a JOIN instances i"
                          " ON i.ref = a.instance_ref WHERE i.instance_id = $1", inst.id))
        sim_acw = {(a, c, f): (ch, q, e) for a, c, ch, q, f, e in h.sim.agent_acw_intervals(
            inst.id, snaps[0], snaps[-1] + 1e-6)}
        want = {k for k, (_ch, _q, e) in sim_acw.items() if any(k[2] <= t < e for t in snaps)}
        stored_acw = await _fetch(database_url, "SELECT agent_id, contact_id, channel, queue_id, started_at,"
                                                " ended_at, last_seen_at FROM agent_acw_intervals_view"
                                                " WHERE instance_id = $1", inst.id)
        acw = {(r["agent_id"], r["contact_id"], int(r["started_at"].timestamp())): r for r in stored_acw}
        assert set(acw) == want
        acw_seen += len(acw)
        for k, r in acw.items():
            ch, q, e = sim_acw[k]
            assert (r["channel"], r["queue_id"]) == (ch, q)
            assert r["last_seen_at"].timestamp() < e, k
            if r["ended_at"] is not None and r["ended_at"] != r["last_seen_at"]:
                assert e <= r["ended_at"].timestamp(), k
    assert acw_seen
    # the README's "ACW per agent today" answers from these intervals
    (query,) = [b for b in re.findall(r"^```sql\n(.*?)^```", _README, flags=re.M | re.S) if "ACW per agent today" in b]
    answer = {r["agent_name"]: (r["contacts"], r["acw_seconds"]) for r in await _fetch(database_url, query)}
    per_agent = await _fetch(database_url, "SELECT agent_name, count(*) AS n FROM agent_acw_intervals_view"
                                           " WHERE COALESCE(ended_at, now()) > date_trunc('day', now())"
                                           " GROUP BY agent_name")
    assert {a: n for a, (n, _s) in answer.items()} == {r["agent_name"]: r["n"] for r in per_agent}
    assert all(secs > 0 for _n, secs in answer.values())

    # the gauges of the newest snapshot on /metrics
    got = await p.get("/metrics")
    assert got is not None and got[0] == 200
    text = got[1].decode()
    assert len(re.findall(r"^collector_live_contacts_in_queue\{", text, re.M)) == len(now_rows)
    assert re.search(r'^collector_live_agents\{.*state="available"', text, re.M)
    assert "collector_live_snapshot_timestamp_seconds{" in text
    # live rounds record no run; every snapshot is one collected slice
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE profile LIKE '%_now%'") == 0
    assert await p.stop(signal.SIGTERM) == 0


async def _periods(url: str) -> list[tuple[str, str, set[datetime], set[datetime]]]:
    """Per live (instance, profile): the periods with a snapshot, and those recorded as gaps
    (a gap row spans a range of periods)."""
    rows = await _fetch(url, """
        SELECT i.instance_id, p.name, array_agg(c.slice_start) AS taken,
               (SELECT array_agg(x) FROM collection_gaps g,
                       generate_series(g.slice_start, g.slice_start + make_interval(secs => g.slice_seconds - $1),
                                       make_interval(secs => $1)) AS x
                WHERE g.instance_ref = c.instance_ref AND g.profile_id = c.profile_id) AS gaps
        FROM collected_slices c JOIN profiles p ON p.id = c.profile_id JOIN instances i ON i.ref = c.instance_ref
        WHERE p.api IN ('current', 'agents') GROUP BY i.instance_id, p.name, c.instance_ref, c.profile_id""", EVERY)
    return [(r["instance_id"], r["name"], set(r["taken"]), set(r["gaps"] or ())) for r in rows]


async def test_an_outage_and_a_kill_lose_only_their_periods_and_polling_goes_on(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    url = await private_pg.create_database()
    h = await start_sim(_fleet(1))
    cfg = write_config(tmp_path / "c.toml", url, h.sim, collection=_V1, extra=_LIVE)
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    await _snapshots(url, 2)

    await private_pg.astop()  # the database away for 3 periods
    await anyio.sleep(3 * EVERY)
    assert p.alive()
    await private_pg.astart()
    before = int(await sql_value(url, "SELECT count(*) FROM collected_slices"))
    await wait_sql(url, "SELECT count(*) FROM collected_slices", lambda n: n >= before + 4, 60)  # polling again

    p.proc.send_signal(signal.SIGKILL)  # kill -9, down for 3 periods, started again
    p.kill()
    await anyio.sleep(3 * EVERY)
    p2 = serve_procs(cfg)
    await p2.wait_status("/readyz", 200, 60)
    restarted = datetime.now(UTC)
    before = int(await sql_value(url, "SELECT count(*) FROM collected_slices"))
    await wait_sql(url, "SELECT count(*) FROM collected_slices", lambda n: n >= before + 4, 60)
    assert await p2.stop(signal.SIGTERM) == 0

    step = timedelta(seconds=EVERY)
    for iid, profile, taken, gaps in await _periods(url):
        first, last = min(taken), max(taken)
        every_period = {first + k * step for k in range(int((last - first) / step) + 1)}
        missing = every_period - taken
        # each missed period is recorded as a gap; none is both; none stored twice (the keys)
        assert missing <= gaps, (iid, profile, sorted(missing - gaps))
        assert not taken & gaps
        # the two faults lasted about 3 periods each (plus the restart's start-up): no more is lost
        assert len(missing) <= 2 * 3 + 8, (iid, profile, len(missing))
        assert last > restarted  # still polling after both faults
    assert await _check_queue_history(url, h.sim) >= 4  # what landed is exact
