"""``collector serve`` outlives REPEATED database outages, with a GetMetricDataV2 profile and
with v1 alone: a real serve process against the simulator and a private Postgres cluster the
test stops and starts again, three times in a row from early in a backfill (the V2 backfill
is over before the third, so that one finds the scheduler between rounds), and once right as
the fleet is being rediscovered, for longer than the discovery TTL and the lease TTL.

The process must stay up the whole time (an exit 1 or 3 while the database is away is the
bug these tests are here for), every slice of the backfill must land exactly once, and the
stored values must be exactly the simulator's. V2 values are checked against the
simulator's own GetMetricDataV2 answers, asked for through the real aiobotocore client (not
through the collector's planner or decoder): that check leans only on the public surface,
the config TOML, the HTTP API and the SQL tables and views. v1 rows are checked with
``tests.helpers.expected_rows`` as in tests/test_outages.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import SimHandle, StartSim, write_config
from tests.procs import PrivatePostgres, ServeProcess, ServeProcs, sql_value, wait_for, wait_sql

OUTAGES = 3  # the database goes away this many times during the backfill
OUTAGE = 8.0  # seconds each outage lasts: longer than the discovery TTL
UP = 4.0  # seconds the database stays up between two outages
DISCOVERY_TTL = 3  # seconds (scheduler.discovery_ttl)
LEASE_TTL = 5  # seconds ([cluster] lease_ttl: heartbeats every lease_ttl / 3, on a single node too)
REFRESH_OUTAGE = 10.0  # longer than DISCOVERY_TTL and LEASE_TTL
SETTLE = 300  # seconds (scheduler.settle)
V2_PROFILE = "queues_hourly"
V2_METRICS = ("CONTACTS_HANDLED", "CONTACTS_QUEUED")
V2_CHANNELS = ("VOICE", "CHAT")


@dataclass(frozen=True)
class Shape:
    """One API's variant of the test: the profile under test and how it is configured."""

    api: str  # "v1" | "v2"
    profile: str  # its name in collected_slices/profiles
    step: int  # slice length in seconds
    backfill: int  # seconds a never-collected instance starts back
    collection: str  # the [collection] table's body (the v1 "default" profile)
    extra: str  # everything after it


def _scheduler(backfill: str, catchup_batch: int) -> str:
    return (
        f'\n[scheduler]\nsettle = "{SETTLE}s"\ninitial_backfill = "{backfill}"\nrevisits = []\n'
        f'catchup_batch = {catchup_batch}\nretry_after = "1s"\ndiscovery_ttl = "{DISCOVERY_TTL}s"\n'
        f"grace_period = 2.0\n"
        f"\n[cluster]\nlease_ttl = {LEASE_TTL}\n"
        f"\n[writer]\nchannel_size = 1\nbatch_rows = 200\nbatch_seconds = 0.1\n"
    )


# V2: 6 days of hourly slices (144 a instance) are 3 windows (a request covers just under
# 3 days at 1h: 71 + 71 + 2). With catchup_batch = 1 the backfill takes two rounds: the
# first has the oldest window and the newest (its 2 slices land at once, the 71 take some
# 7 s at 10 results a page and 3 requests a second per account), the second the middle
# window. So the first two outages land in the backfill (a round in flight: fetches on,
# writes waiting), and the third, once it is done, while the scheduler only wakes every
# discovery_ttl to refresh the fleet and plan: both states the V2 scheduler must outlive.
# The default v1 profile beside it has the 4 quarters of its last hour to do.
V2 = Shape(
    api="v2", profile=V2_PROFILE, step=3600, backfill=6 * 86400,
    collection='granularity = "15m"\ngroupings = ["QUEUE"]\nmetrics = ["CONTACTS_HANDLED"]\nservice_levels = []',
    extra=_scheduler("1h", 1) + (
        "\n[aws]\nget_metric_data_v2_rate = 3.0\nget_metric_data_v2_burst = 3\n"
        "\n[[profiles]]\n"
        f'name = "{V2_PROFILE}"\napi = "v2"\ninterval = "1h"\ninitial_backfill = "6d"\n'
        'groupings = ["QUEUE"]\n'
        f"metrics = {json.dumps(list(V2_METRICS))}\n"
        "max_results = 10\n"
        "[profiles.filters]\n"
        'queues = "all"\n'
        f"channels = {json.dumps(list(V2_CHANNELS))}\n"
    ),
)

# v1: 12 hours of quarters (48 a instance), 4 a round, at 2 requests a second per account.
V1 = Shape(
    api="v1", profile="default", step=900, backfill=12 * 3600,
    collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\nservice_levels = [20, 60]',
    extra=_scheduler("12h", 4) + "\n[aws]\nget_metric_data_rate = 2.0\nget_metric_data_burst = 2\n",
)


def _sim_config(shape: Shape) -> SimulatorConfig:
    fleet = FleetSpec(accounts=2, queues_per_instance=3, agents_per_instance=4)
    if shape.api == "v2":
        return SimulatorConfig(fleet=fleet, metric_data_v2_rate=3, metric_data_v2_burst=3)
    return SimulatorConfig(fleet=fleet, rate=2, burst=2)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """This module's tests keep their private Postgres (and logs) outside pytest's basetemp.
    Run as root, pgserver starts Postgres as its own user, which must be able to reach the
    data directory at every restart; any other pytest session starting meanwhile makes
    ``/tmp/pytest-of-root`` private (0700) again, and a restart then fails with
    "could not access directory". Here only this test owns the path."""
    d = Path(tempfile.mkdtemp(prefix="collector-outages-v2-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- the process ------------------------------------------------------------------------------


def _assert_alive(p: ServeProcess, when: str) -> None:
    if not p.alive():
        raise AssertionError(f"serve exited with {p.proc.returncode} {when}:\n{p.output()[-6000:]}")


async def _stay_alive(p: ServeProcess, seconds: float, when: str) -> None:
    """The deliberate part of an outage (or of the database being up between two): the
    process is checked every quarter second and must never exit."""
    with anyio.move_on_after(seconds):
        while True:
            _assert_alive(p, when)
            await anyio.sleep(0.25)
    _assert_alive(p, when)


async def _outage(pg: PrivatePostgres, p: ServeProcess, seconds: float, when: str) -> None:
    """Stop the database for ``seconds`` (from the moment it is down) and start it again;
    the process must stay alive throughout and be ready again after."""
    await pg.astop()
    down = time.monotonic()
    await p.wait_status("/readyz", 503, 30)  # fails at once if the process exited
    await _stay_alive(p, seconds - (time.monotonic() - down), f"during {when}")
    await pg.astart()
    await p.wait_status("/readyz", 200, 60)


# -- what should be there -----------------------------------------------------------------------


def _floor(t: float, step: int) -> int:
    return int(t) // step * step


def _newest_end(t: float, step: int) -> int:
    """The end of the newest settled slice at time ``t`` (UTC-aligned)."""
    return _floor(t - SETTLE, step)


async def _slice_starts(url: str, profile: str) -> dict[str, list[int]]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        recs = await conn.fetch(
            "SELECT i.instance_id, c.slice_start FROM collected_slices c"
            " JOIN profiles p ON p.id = c.profile_id JOIN instances i ON i.ref = c.instance_ref"
            " WHERE p.name = $1 ORDER BY 1, 2", profile)
    finally:
        await conn.close()
    out: dict[str, list[int]] = {}
    for r in recs:
        out.setdefault(r["instance_id"], []).append(int(r["slice_start"].timestamp()))
    return out


async def _wait_backfill_complete(url: str, h: SimHandle, shape: Shape, firsts: set[int], limit: float,
                                  p: ServeProcess) -> dict[str, list[int]]:
    """Every instance has every slice from the backfill's start up to the newest settled
    one, and no run is queued or running. ``firsts``: the starts the backfill may have
    (it depends on when the first round ran)."""
    seen: dict[str, list[int]] = {}

    async def complete() -> bool:
        _assert_alive(p, "while the backfill completes")
        nonlocal seen
        try:
            seen = await _slice_starts(url, shape.profile)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        end = _newest_end(time.time(), shape.step)
        for iid in h.sim.fleet.instances:
            got = seen.get(iid, [])
            if not got or got[0] not in firsts or got != list(range(got[0], end, shape.step)):
                return False
        busy = await sql_value(url, "SELECT count(*) FROM collection_runs WHERE status IN ('queued', 'running')")
        return bool(busy == 0)

    def what() -> str:
        brief = {k: (len(v), v[:1], v[-1:]) for k, v in seen.items()}
        return f"the whole backfill of {shape.profile} (firsts {sorted(firsts)}; seen {brief})"

    await wait_for(complete, limit, what)
    return seen


async def _v1_exact(url: str, h: SimHandle, cfg: Path) -> int:
    """The v1 ("default") rows are exactly the simulator's for the slices collected."""
    from collector.config import load_settings
    from tests.helpers import expected_rows, stored_rows

    settings = load_settings(cfg)
    got = Counter({k: n for k, n in (await stored_rows(url)).items() if k[-1] == "default"})
    starts = await _slice_starts(url, "default")
    assert set(starts) == set(h.sim.fleet.instances), starts
    first = min(v[0] for v in starts.values())
    last = max(v[-1] for v in starts.values())
    g = settings.collection.granularity_seconds
    want = expected_rows(h.sim, settings.collection, datetime.fromtimestamp(first, UTC),
                         datetime.fromtimestamp(last + g, UTC), datetime.now(UTC))
    assert got == want  # exact: nothing lost, nothing doubled
    return sum(got.values())


V2Row = tuple[str, int, int, str, str, float | None]


async def _v2_oracle(h: SimHandle, starts: dict[str, list[int]], step: int) -> Counter[V2Row]:
    """The simulator's own GetMetricDataV2 answers over each instance's collected range,
    asked for through the real aiobotocore client, a day a request, paged to the end."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    out: Counter[V2Row] = Counter()
    config = AioConfig(retries={"mode": "standard", "max_attempts": 20})
    session = get_session()
    for iid, got in starts.items():
        inst = h.sim.fleet.instances[iid]
        async with session.create_client("connect", region_name=inst.region, endpoint_url=h.url,
                                         config=config) as c:
            queues: list[str] = []
            kw: dict[str, Any] = {}
            while True:
                page = await c.list_queues(InstanceId=iid, QueueTypes=["STANDARD"], MaxResults=1000, **kw)
                queues += [q["Id"] for q in page.get("QueueSummaryList", [])]
                if not page.get("NextToken"):
                    break
                kw = {"NextToken": page["NextToken"]}
            assert queues
            s, end = got[0], got[-1] + step
            while s < end:
                e = min(end, s + 86400)
                kw = {}
                while True:
                    page = await c.get_metric_data_v2(
                        ResourceArn=inst.arn, StartTime=datetime.fromtimestamp(s, UTC),
                        EndTime=datetime.fromtimestamp(e, UTC),
                        Interval={"TimeZone": "UTC", "IntervalPeriod": "HOUR"},
                        Filters=[{"FilterKey": "QUEUE", "FilterValues": queues},
                                 {"FilterKey": "CHANNEL", "FilterValues": list(V2_CHANNELS)}],
                        Groupings=["QUEUE"], Metrics=[{"Name": m} for m in V2_METRICS],
                        MaxResults=100, **kw,
                    )
                    for res in page.get("MetricResults", []):
                        mi = res["MetricInterval"]
                        dims = json.dumps(res.get("Dimensions", {}), sort_keys=True)
                        for col in res.get("Collections", []):
                            out[(iid, int(mi["StartTime"].timestamp()), int(mi["EndTime"].timestamp()),
                                 dims, col["Metric"]["Name"], col.get("Value"))] += 1
                    if not page.get("NextToken"):
                        break
                    kw = {"NextToken": page["NextToken"]}
                s = e
    return out


async def _v2_stored(url: str) -> Counter[V2Row]:
    conn = await asyncpg.connect(url)
    try:
        recs = await conn.fetch(
            "SELECT instance_id, interval_start, interval_end, dimensions::text AS dims, metric_name, value,"
            " threshold_value, metric_filters, api FROM historical_metrics WHERE profile = $1", V2_PROFILE)
    finally:
        await conn.close()
    out: Counter[V2Row] = Counter()
    for r in recs:
        assert r["api"] == "v2" and r["threshold_value"] is None and r["metric_filters"] is None, dict(r)
        out[(r["instance_id"], int(r["interval_start"].timestamp()), int(r["interval_end"].timestamp()),
             json.dumps(json.loads(r["dims"]), sort_keys=True), r["metric_name"], r["value"])] += 1
    return out


async def _v2_exact(url: str, h: SimHandle) -> int:
    starts = await _slice_starts(url, V2_PROFILE)
    got = await _v2_stored(url)
    want = await _v2_oracle(h, starts, V2.step)
    assert sum(want.values()) > 0
    doubled = {k: n for k, n in got.items() if n > 1}
    assert not doubled, f"values stored twice: {list(doubled.items())[:5]}"
    missing, extra = want - got, got - want
    assert not missing and not extra, (
        f"{sum(missing.values())} values missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} not the simulator's (e.g. {list(extra)[:3]})"
    )
    return sum(got.values())


async def _no_duplicates(url: str) -> None:
    """Each slice collected once (no revisits are configured); metric_values has one row
    per key; collected_slices.rows matches what is stored."""
    conn = await asyncpg.connect(url)
    try:
        times = await conn.fetch("SELECT times_collected, count(*) AS n FROM collected_slices GROUP BY 1")
        assert {r["times_collected"] for r in times} == {1}, [tuple(r) for r in times]
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM metric_values GROUP BY instance_ref, slice_start, slice_seconds,"
            " profile_id, dims_id, metric_set_id HAVING count(*) > 1) d")
        assert dup == 0
        off = await conn.fetch(
            "SELECT c.slice_start, c.rows, count(m.*) AS stored FROM collected_slices c"
            " LEFT JOIN metric_values m ON (m.instance_ref, m.slice_start, m.slice_seconds, m.profile_id)"
            "  = (c.instance_ref, c.slice_start, c.slice_seconds, c.profile_id)"
            " GROUP BY c.instance_ref, c.slice_start, c.slice_seconds, c.profile_id, c.rows"
            " HAVING c.rows <> count(m.*) LIMIT 5")
        assert not off, [tuple(r) for r in off]
    finally:
        await conn.close()


async def _runs_succeeded(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        runs = await conn.fetch("SELECT status, count(*) AS n FROM collection_runs GROUP BY 1")
    finally:
        await conn.close()
    statuses = {r["status"]: r["n"] for r in runs}
    assert set(statuses) == {"succeeded"}, statuses  # the rounds cut by the outages finished too


async def _stop_cleanly(p: ServeProcess) -> None:
    assert await p.stop(signal.SIGTERM) == 0, p.output()[-6000:]
    out = p.output()
    assert "Traceback" not in out and "ExceptionGroup" not in out, out[-6000:]
    assert "service_stopped" in out


# -- the tests ----------------------------------------------------------------------------------


async def _start(shape: Shape, start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs,
                 tmp_path: Path) -> tuple[str, SimHandle, Path, ServeProcess, float]:
    url = await private_pg.create_database()
    h = await start_sim(_sim_config(shape))
    cfg = write_config(tmp_path / "c.toml", url, h.sim, collection=shape.collection, extra=shape.extra)
    t0 = time.time()
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    return url, h, cfg, p, t0


def _firsts(shape: Shape, t0: float, t1: float) -> set[int]:
    """The backfill's possible first slice: ``backfill`` before the newest settled end as of
    the first round, which ran between ``t0`` and ``t1``."""
    lo, hi = _newest_end(t0, shape.step), _newest_end(t1, shape.step)
    return {e - shape.backfill for e in range(lo, hi + 1, shape.step)}


def _count_slices(profile: str) -> str:
    return ("SELECT count(*) FROM collected_slices c JOIN profiles p ON p.id = c.profile_id"
            f" WHERE p.name = '{profile}'")


async def _repeated_outages_during_backfill(
    shape: Shape, start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    url, h, cfg, p, t0 = await _start(shape, start_sim, private_pg, serve_procs, tmp_path)
    n_instances = len(h.sim.fleet.instances)
    per_instance = shape.backfill // shape.step
    await wait_sql(url, _count_slices(shape.profile), lambda n: n >= 1, 90)  # the backfill is under way
    t1 = time.time()
    total = n_instances * per_instance  # about: the backfill's end moves on with the clock
    landed = [int(await sql_value(url, _count_slices(shape.profile)))]
    assert landed[0] < total, "the backfill was over before the first outage"
    for i in range(OUTAGES):
        print(f"{shape.api}: outage {i + 1} of {OUTAGES} at {time.time() - t0:.1f}s,"
              f" {landed[-1]} of about {total} {shape.profile} slices landed", flush=True)
        await _outage(private_pg, p, OUTAGE, f"outage {i + 1} of {OUTAGES}")
        if i < OUTAGES - 1:
            await _stay_alive(p, UP, f"the database being up after outage {i + 1}")
        landed.append(int(await sql_value(url, _count_slices(shape.profile))))
    print(f"{shape.api}: after the last outage ({time.time() - t0:.1f}s): {landed[-1]} slices landed")

    seen = await _wait_backfill_complete(url, h, shape, _firsts(shape, t0, t1), 150, p)
    assert all(len(v) >= per_instance for v in seen.values()), {k: len(v) for k, v in seen.items()}
    _assert_alive(p, "after the last outage")
    await _stop_cleanly(p)
    await _runs_succeeded(url)
    await _no_duplicates(url)
    n1 = await _v1_exact(url, h, cfg)
    n2 = await _v2_exact(url, h) if shape.api == "v2" else 0
    print(f"{shape.api}: exact: {n1} v1 rows, {n2} V2 values")


async def test_v2_serve_outlives_repeated_database_outages_during_backfill(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    await _repeated_outages_during_backfill(V2, start_sim, private_pg, serve_procs, tmp_path)


async def test_v1_serve_outlives_repeated_database_outages_during_backfill(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    await _repeated_outages_during_backfill(V1, start_sim, private_pg, serve_procs, tmp_path)


async def test_v2_serve_outlives_an_outage_during_discovery_refresh(
    start_sim: StartSim, private_pg: PrivatePostgres, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    """Once the backfill is done the scheduler only wakes every discovery_ttl and resolves
    the fleet again (ListQueues, then the queues and the round's plan in Postgres). The
    database goes away right as one of those refreshes answers, for longer than the
    discovery TTL and the lease TTL; afterwards the service keeps collecting."""
    shape = V2
    url, h, cfg, p, t0 = await _start(shape, start_sim, private_pg, serve_procs, tmp_path)
    await wait_sql(url, _count_slices(shape.profile), lambda n: n >= 1, 90)
    t1 = time.time()
    await _wait_backfill_complete(url, h, shape, _firsts(shape, t0, t1), 120, p)

    stats = h.sim.stats.by_op_status

    def listed() -> int:
        return stats[("ListQueues", 200)]

    before = listed()

    async def refreshed() -> bool:
        _assert_alive(p, "waiting for a discovery refresh")
        return listed() > before

    await wait_for(refreshed, 4 * DISCOVERY_TTL, "a discovery refresh (ListQueues) after the backfill")
    await _outage(private_pg, p, REFRESH_OUTAGE, "an outage from a discovery refresh on")

    # It keeps collecting: rounds again (each round sets every instance's and profile's lag) ...
    lag0 = await p.lag()
    assert {prof for _i, prof in lag0} == {"default", V2_PROFILE}, lag0

    async def rounds_again() -> bool:
        _assert_alive(p, "after the outage")
        lag = await p.lag()
        return all(lag.get(k, 0) > v for k, v in lag0.items())

    await wait_for(rounds_again, 30, "scheduler rounds (v1 and V2) after the outage")
    # ... and a V2 collection asked for now runs to the end and stores the same values.
    end = _newest_end(time.time(), 3600)
    body = {"start": datetime.fromtimestamp(end - 3 * 3600, UTC).isoformat(),
            "end": datetime.fromtimestamp(end, UTC).isoformat(), "profile": V2_PROFILE}
    got = await p.request("POST", "/collections", json=body)
    assert got is not None and got[0] == 202, got
    run_id = json.loads(got[1])["id"]
    run: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal run
        _assert_alive(p, "running a one-off V2 collection after the outage")
        r = await p.get(f"/collections/{run_id}")
        if r is None or r[0] != 200:
            return False
        run = json.loads(r[1])
        return run["status"] not in ("queued", "running")

    await wait_for(finished, 60, lambda: f"the one-off V2 run {run_id} (last: {run})")
    assert run["status"] == "succeeded" and run["slices_done"] == 3 * len(h.sim.fleet.instances), run
    await _stop_cleanly(p)
    await _runs_succeeded(url)
    await _v1_exact(url, h, cfg)
    await _v2_exact(url, h)
