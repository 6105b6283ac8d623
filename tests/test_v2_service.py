"""GetMetricDataV2 through the product: the runs path (``collect``, the pipeline's
limiters, retry path, bounded stream and writer), the CLI, and a real ``collector
serve`` process, against the simulator with throttling on and real Postgres."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from collector.apis.v2.api import plan, resources_of
from collector.apis.v2.planner import floor_boundary, newest_end, oldest_start
from collector.apis.v2.unit import V2Window
from collector.config import Settings, load_settings
from collector.fleet import resolve
from collector.model import SliceKey
from collector.progress import Progress
from collector.runs import collect
from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from collector.wiring import runtime
from tests.cli_run import cli_env, run_cli
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows, utc_floor, wait_until
from tests.test_v2_storage import _expected, _stored

AGENTS_15M = """
[[profiles]]
name = "agents_15m"
api = "v2"
interval = "15m"
groupings = ["AGENT", "QUEUE"]
metrics = ["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "AGENT_ANSWER_RATE",
  { name = "CONTACTS_HANDLED", metric_filters = [{ key = "INITIATION_METHOD", values = ["INBOUND"] }] }]
[profiles.filters]
queues = "all"
agents = "all"
"""

DAILY_NY = """
[[profiles]]
name = "daily_ny"
api = "v2"
interval = "1d"
time_zone = "America/New_York"
groupings = ["QUEUE", "CHANNEL"]
metrics = ["CONTACTS_HANDLED", "ABANDONMENT_RATE",
  { name = "SERVICE_LEVEL", thresholds = [{ comparison = "LT", value = 20 }, { comparison = "LTE", value = 60 }] }]
[profiles.filters]
queues = "all"
channels = ["VOICE", "CHAT"]
"""


class ShiftedClock:
    """Real time moved by ``offset`` seconds (a past date, for DST days)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class Recorder(Progress):
    def __init__(self) -> None:
        self.total = 0
        self.written: list[SliceKey] = []

    def set_total(self, total: int) -> None:
        self.total = total

    def slices_written(self, keys: Sequence[SliceKey], rows: int) -> None:
        self.written += keys


async def _windows(sim: Simulator, settings: Settings, name: str, start: dt.datetime, end: dt.datetime,
                   now: dt.datetime) -> list[V2Window]:
    """The windows the collector plans, from the simulator's resources (for ``_expected``):
    every instance resolved with the resources the profile's ``"all"`` filters need."""
    profile = next(p for p in settings.v2_profiles() if p.name == name)
    out: list[V2Window] = []
    async with runtime(settings) as rt:
        res = await resolve(rt, needs=rt.api(name).needs)
        assert not res.failed_instances and not res.failed_scopes, res
        assert {t.instance_id for t in res.targets} == set(sim.fleet.instances)
        for t in res.targets:
            out += plan([t], profile, start, end, now, {t.instance_id: resources_of(t)})
    return out


# The view rows of V2 values: the simulator's own answer (``_expected``) against what is
# stored (``_stored``).
def _no_refusals(sim: Simulator) -> None:
    assert sim.stats.by_status.get(400, 0) == 0 and not sim.stats.bad_requests


async def test_agent_and_queue_15m_over_3_days_through_collect_is_exact(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    # throttling on, at a V2 quota of 40/s (the configurable rate) so 2 x 273 pages take seconds
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=30, agents_per_instance=40),
                                        metric_data_v2_rate=40, metric_data_v2_burst=40))
    sim = h.sim
    quota = "\n[aws]\nget_metric_data_v2_rate = 40.0\nget_metric_data_v2_burst = 40\n"
    settings = load_settings(write_config(tmp_path / "c.toml", database_url, sim, extra=quota + AGENTS_15M))
    now = dt.datetime.now(dt.UTC)
    end = newest_end(now, "FIFTEEN_MIN", "UTC")
    start = end - dt.timedelta(days=3)
    progress = Recorder()
    async with runtime(settings) as rt:
        run_id, summary = await collect(rt, start, end, profile="agents_15m", progress=progress,
                                        on_planned=progress.set_total)
        assert (summary.slices_done, summary.slices_failed, summary.slices_total) == (288, 0, 288)
        lim = rt.limiters.get(sim.fleet.instances[next(iter(sim.fleet.instances))].account, "us-east-1",
                              "GetMetricDataV2")
        # every call of the two windows (287 + 1 slices, one request each, paged) through its limiter
        assert lim.acquired == summary.requests
        assert sim.stats.by_op_status[("GetMetricDataV2", 200)] == summary.requests - summary.throttles
    assert progress.total == 288 and len(set(progress.written)) == 288
    _no_refusals(sim)
    windows = await _windows(sim, settings, "agents_15m", start, end, now)
    conn = await asyncpg.connect(database_url)
    try:
        got = await _stored(conn, "agents_15m")
        assert got == _expected(sim, windows, now)
        assert any(r[13] is None for r in got) and len(got) > 50_000
        run = await conn.fetchrow("SELECT status, slices_done, profile FROM collection_runs WHERE id = $1", run_id)
        assert tuple(run) == ("succeeded", 288, "agents_15m")
        assert await conn.fetchval("SELECT count(*) FROM collected_slices") == 288
        assert await conn.fetchval("SELECT count(*) FROM agents") == 40
        before = await conn.fetch("SELECT ctid::text, xmin::text, vals FROM metric_values ORDER BY 1")
        async with runtime(settings) as rt:  # a second run changes nothing
            _run_id, again = await collect(rt, start, end, profile="agents_15m")
        assert again.slices_done == 288
        after = await conn.fetch("SELECT ctid::text, xmin::text, vals FROM metric_values ORDER BY 1")
        assert before == after
        assert await _stored(conn, "agents_15m") == got
    finally:
        await conn.close()
    _no_refusals(sim)


@pytest.mark.parametrize(("at", "hours"), [
    (dt.datetime(2026, 3, 20, 15, tzinfo=dt.UTC), 23),  # spring forward, 2026-03-08
    (dt.datetime(2026, 11, 10, 15, tzinfo=dt.UTC), 25),  # fall back, 2026-11-01
])
async def test_day_slices_across_dst_through_collect_are_exact(
    start_sim: StartSim, database_url: str, tmp_path: Path, at: dt.datetime, hours: int
) -> None:
    offset = at.timestamp() - time.time()
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=4, agents_per_instance=6)),
                        now=lambda: time.time() + offset)
    sim = h.sim
    settings = load_settings(write_config(tmp_path / "c.toml", database_url, sim, extra=DAILY_NY))
    clock = ShiftedClock(offset)
    now = clock.now()
    end = newest_end(now, "DAY", "America/New_York")
    start = floor_boundary(end - dt.timedelta(days=14), "DAY", "America/New_York")
    async with runtime(settings, clock=clock) as rt:
        _run_id, summary = await collect(rt, start, end, profile="daily_ny")
    assert summary.slices_failed == 0 and summary.slices_done == summary.slices_total >= 14
    _no_refusals(sim)
    conn = await asyncpg.connect(database_url)
    try:
        spans = {r[0] / 3600 for r in await conn.fetch("SELECT DISTINCT slice_seconds FROM collected_slices")}
        assert spans == {24.0, float(hours)}
        got = await _stored(conn, "daily_ny")
        assert got == _expected(sim, await _windows(sim, settings, "daily_ny", start, end, now), now)
        assert float(hours) in {(r[2] - r[1]) / 3600 for r in got}
    finally:
        await conn.close()


async def test_a_90_day_backfill_through_the_cli_runs_to_completion(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=2, agents_per_instance=2)))
    sim = h.sim
    profile = """
[[profiles]]
name = "hourly_90d"
api = "v2"
interval = "1h"
time_zone = "Europe/London"
groupings = ["AGENT"]
metrics = ["CONTACTS_HANDLED", "SUM_ONLINE_TIME_AGENT", "AGENT_OCCUPANCY"]
[profiles.filters]
agents = "all"
"""
    cfg = write_config(tmp_path / "c.toml", database_url, sim, extra=profile)
    now = dt.datetime.now(dt.UTC)
    # an hour inside the 10-minute margin, so the CLI's own "now" a moment later still takes it
    start = oldest_start(now, "HOUR", "Europe/London", margin=600 + 3600)
    end = newest_end(now, "HOUR", "Europe/London")
    n = int((end - start).total_seconds() // 3600)
    env = cli_env({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    out = await run_cli("collect", "--config", str(cfg), "--profile", "hourly_90d",
                        "--start", start.isoformat(), "--end", end.isoformat(), "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    assert f"{n}/{n} slices" in out.stdout
    _no_refusals(sim)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM collected_slices") == n
        windows = await _windows(sim, load_settings(cfg), "hourly_90d", start, end, now)
        assert len(windows) == -(-n // 71)
        assert await _stored(conn, "hourly_90d") == _expected(sim, windows, now)
    finally:
        await conn.close()


async def test_a_v2_start_beyond_90_days_is_refused_before_any_call(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=2, agents_per_instance=2)))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra=AGENTS_15M)
    end = utc_floor(dt.datetime.now(dt.UTC), 900)
    start = end - dt.timedelta(days=91)
    env = cli_env({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    out = await run_cli("collect", "--config", str(cfg), "--profile", "agents_15m",
                        "--start", start.isoformat(), "--end", end.isoformat(), env=env)
    assert out.returncode == 2, out.stderr
    assert "90 days" in out.stderr
    assert sum(h.sim.stats.by_status.values()) == 0


async def test_v1_and_v2_on_one_account_at_once_each_keep_their_own_quota(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=6, agents_per_instance=12)))
    sim = h.sim
    paged_v2 = """
[[profiles]]
name = "agents_paged"
api = "v2"
interval = "15m"
groupings = ["AGENT"]
max_results = 10
metrics = ["CONTACTS_HANDLED", "AVG_HANDLE_TIME"]
[profiles.filters]
agents = "all"
"""
    settings = load_settings(write_config(tmp_path / "c.toml", database_url, sim, extra=paged_v2))
    now = dt.datetime.now(dt.UTC)
    end = utc_floor(now, 900)
    start = end - dt.timedelta(hours=6)
    summaries: dict[str, Any] = {}
    async with runtime(settings) as rt:

        async def one(profile: str) -> None:
            summaries[profile] = (await collect(rt, start, end, profile=profile))[1]

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "default")
            tg.start_soon(one, "agents_paged")
        account = next(iter(sim.fleet.instances.values())).account
        v1 = rt.limiters.get(account, "us-east-1", "GetMetricData")
        v2 = rt.limiters.get(account, "us-east-1", "GetMetricDataV2")
    s1, s2 = summaries["default"], summaries["agents_paged"]
    assert s1.slices_failed == s2.slices_failed == 0 and s1.slices_done == s2.slices_done == 24
    assert s2.requests > 20  # paged: the V2 quota was really exercised
    ops = sim.stats.by_op_status
    # each API's calls went through its own limiter only, and each stayed within its own quota
    assert v1.acquired == s1.requests == ops[("GetMetricData", 200)] + ops[("GetMetricData", 429)]
    assert v2.acquired == s2.requests == ops[("GetMetricDataV2", 200)] + ops[("GetMetricDataV2", 429)]
    assert ops[("GetMetricData", 429)] <= 1 + 0.02 * s1.requests
    assert ops[("GetMetricDataV2", 429)] <= 1 + 0.02 * s2.requests
    # each limiter heard only its own API's throttles, and has its own quota as ceiling
    assert v1.throttles == ops[("GetMetricData", 429)] and v2.throttles == ops[("GetMetricDataV2", 429)]
    assert (v1.ceiling, v2.ceiling) == (5.0, 10.0)
    _no_refusals(sim)
    got_v1 = Counter({k: n for k, n in (await stored_rows(database_url)).items() if k[-1] == "default"})
    # the v1 view columns of V2 rows: compare v1 rows only
    want_v1 = expected_rows(sim, settings.collection, start, end, now)
    assert got_v1 == want_v1
    conn = await asyncpg.connect(database_url)
    try:
        windows = await _windows(sim, settings, "agents_paged", start, end, now)
        assert await _stored(conn, "agents_paged") == _expected(sim, windows, now)
    finally:
        await conn.close()


async def test_collector_serve_schedules_a_v2_profile(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=3, agents_per_instance=4)))
    extra = AGENTS_15M.replace('interval = "15m"', 'interval = "15m"\ninitial_backfill = "3h"') + (
        '\n[scheduler]\nsettle = "1m"\ninitial_backfill = "30m"\nrevisits = []\n\n[api]\nport = 0\n'
    )
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra=extra)
    env = {**cli_env({k: v for k, v in os.environ.items() if k.startswith("AWS_")}), "COLLECTOR_LOG_LEVEL": "info"}
    p = _serve(cfg, env)
    sql = ("SELECT count(*) AS n FROM collected_slices c JOIN profiles p ON p.id = c.profile_id "
           "WHERE p.name = 'agents_15m'")
    try:

        async def landed() -> bool:
            rows = await _query(database_url, sql)
            return bool(rows) and rows[0] >= 12  # 3 hours of 15-minute slices

        await wait_until(landed, 90)
    finally:
        p.send_signal(signal.SIGTERM)
        out = (await anyio.to_thread.run_sync(lambda: p.communicate(timeout=60)))[0].decode()
    assert p.returncode == 0, out
    conn = await asyncpg.connect(database_url)
    try:
        n = await conn.fetchval("SELECT count(*) FROM historical_metrics WHERE api = 'v2' AND profile = 'agents_15m'")
        assert n > 0
        # one scheduler serves every profile: a round's run names each profile it collected
        # ("agents_15m,default" when the v1 default profile's slices are due with it)
        runs = await conn.fetch("SELECT status, profile FROM collection_runs WHERE requested_by = 'scheduler' "
                                "AND 'agents_15m' = ANY(string_to_array(profile, ','))")
        assert runs and {r["status"] for r in runs} <= {"succeeded", "interrupted"}
        assert "succeeded" in {r["status"] for r in runs}
        wm = await conn.fetchval("SELECT count(*) FROM watermarks w JOIN profiles p ON p.id = w.profile_id "
                                 "WHERE p.name = 'agents_15m' AND w.slice_seconds = 900")
        assert wm == 1
    finally:
        await conn.close()
    _no_refusals(h.sim)


def _serve(cfg: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "collector", "serve", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def _query(database_url: str, sql: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        return [int(await conn.fetchval(sql))]
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return []
    finally:
        await conn.close()


async def test_post_collections_with_a_v2_profile_ten_days_back(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    from tests.test_http_api import _free_port, _with_service

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=4, agents_per_instance=6)))
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=DAILY_NY + f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\n")
    settings = load_settings(cfg)
    now = dt.datetime.now(dt.UTC)
    end = newest_end(now, "DAY", "America/New_York")
    start = floor_boundary(end - dt.timedelta(days=10), "DAY", "America/New_York")

    async def body(http: Any, wait_run: Any) -> None:
        old = floor_boundary(start - dt.timedelta(days=85), "DAY", "America/New_York")
        too_old = {"start": old.isoformat(), "end": end.isoformat(), "profile": "daily_ny"}
        async with http.post("/collections", json=too_old) as r:
            assert r.status == 422 and "90 days" in await r.text()
        ok = {"start": start.isoformat(), "end": end.isoformat(), "profile": "daily_ny"}
        async with http.post("/collections", json=ok) as r:
            assert r.status == 202, await r.text()
            run_id = (await r.json())["id"]
        with anyio.fail_after(60):
            await wait_run(run_id)
        async with http.get(f"/collections/{run_id}") as r:
            run = await r.json()
        assert run["status"] == "succeeded" and run["slices_total"] == run["slices_done"] == 10, run

    await _with_service(settings, body)
    conn = await asyncpg.connect(database_url)
    try:
        got = await _stored(conn, "daily_ny")
    finally:
        await conn.close()
    assert got == _expected(h.sim, await _windows(h.sim, settings, "daily_ny", start, end, now), now)
    _no_refusals(h.sim)


async def test_a_one_off_v2_run_in_a_cluster_is_split_into_shard_parts(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    import functools

    import aiohttp

    from collector.wiring import serve
    from tests.helpers import lease_owners, query
    from tests.test_http_api import _free_port

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=3, queues_per_instance=3, agents_per_instance=4)))
    ports = [_free_port(), _free_port()]
    replicas = [
        load_settings(write_config(
            tmp_path / f"r{i}.toml", database_url, h.sim,
            extra=DAILY_NY + f'\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\n'
                             f'\n[cluster]\nenabled = true\nlease_ttl = 3.0\nreplica_id = "r{i}"\n'))
        for i, port in enumerate(ports)
    ]
    now = dt.datetime.now(dt.UTC)
    end = newest_end(now, "DAY", "America/New_York")
    start = floor_boundary(end - dt.timedelta(days=5), "DAY", "America/New_York")
    stops = [anyio.Event() for _ in replicas]
    async with anyio.create_task_group() as tg:
        for st, stop in zip(replicas, stops, strict=True):
            tg.start_soon(functools.partial(serve, st, stop=stop, handle_signals=False))

        async def split() -> bool:
            return sorted((await lease_owners(database_url)).values()) == [1, 2]

        await wait_until(split, 20)
        async with aiohttp.ClientSession() as http:
            body = {"start": start.isoformat(), "end": end.isoformat(), "profile": "daily_ny"}
            async with http.post(f"http://127.0.0.1:{ports[0]}/collections", json=body) as r:
                assert r.status == 202, await r.text()
                run_id = (await r.json())["id"]

            async def finished() -> bool:
                async with http.get(f"http://127.0.0.1:{ports[1]}/collections/{run_id}") as r:
                    return (await r.json())["status"] not in ("queued", "running")

            await wait_until(finished, 60)
            async with http.get(f"http://127.0.0.1:{ports[1]}/collections/{run_id}") as r:
                run = await r.json()
        for stop in stops:
            stop.set()
    assert run["status"] == "succeeded" and run["slices_done"] == 3 * 5, run
    parts = await query(database_url, "SELECT claimed_by, status FROM run_parts")
    assert len(parts) == 3 and {p["status"] for p in parts} == {"done"}
    assert {p["claimed_by"] for p in parts} == {"r0", "r1"}
    conn = await asyncpg.connect(database_url)
    try:
        got = await _stored(conn, "daily_ny")
    finally:
        await conn.close()
    assert got == _expected(h.sim, await _windows(h.sim, replicas[0], "daily_ny", start, end, now), now)
    _no_refusals(h.sim)
