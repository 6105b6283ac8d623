"""Real ``collector serve`` processes against the simulator (issue 11 items 1, 2, 4, 11):
fleets of accounts only, instances that cannot be resolved, a thousand unfinished runs,
and a full one-off queue."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector.config import Settings, load_settings
from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from collector.simulator.fleet import account_id
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows, utc_floor
from tests.procs import ServeProcs, sql_value, wait_for, wait_sql
from tests.test_fleets import _accounts_toml, moto_account_of, moto_sts  # noqa: F401  (a fixture)


def _range(hours: float) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    return end - timedelta(hours=hours), end


async def test_a_full_one_off_queue_answers_429_with_retry_after_and_records_nothing(
    start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=3), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra="\n[scheduler]\nenabled = false\n")
    p = serve_procs(cfg)
    await p.wait_status("/readyz", 200, 60)
    start, end = _range(0.5)
    body = {"start": start.isoformat(), "end": end.isoformat()}
    status, raw, _ = await p.response("POST", "/collections", json=body)
    assert status == 202
    first = json.loads(raw)["id"]
    await wait_sql(database_url, "SELECT status FROM collection_runs WHERE id = $1", lambda s: s == "succeeded",
                   60, first)

    conn = await asyncpg.connect(database_url)  # 100 one-off runs wait (the loop is idle until woken)
    try:
        await conn.execute(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " SELECT 'api', 'default', $1, $2, '{}', 'queued' FROM generate_series(1, 100)", start, end)
    finally:
        await conn.close()
    runs = await sql_value(database_url, "SELECT count(*) FROM collection_runs")
    status, raw, headers = await p.response("POST", "/collections", json=body)
    assert status == 429, raw
    assert int(headers["Retry-After"]) > 0
    assert "queued" in json.loads(raw)["detail"]
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs") == runs  # nothing recorded
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE status = 'failed'") == 0
    assert await p.stop(signal.SIGTERM) == 0


async def _expect_exact(url: str, sim: Simulator, settings: Settings, instances: list[str]) -> None:
    """Every collected slice of ``instances`` holds exactly the simulator's rows."""
    got = await stored_rows(url)
    for iid in instances:
        first = await sql_value(url, "SELECT min(slice_start) FROM collected_slices c JOIN instances i"
                                     " ON i.ref = c.instance_ref WHERE i.instance_id = $1", iid)
        last = await sql_value(url, "SELECT max(slice_start) FROM collected_slices c JOIN instances i"
                                    " ON i.ref = c.instance_ref WHERE i.instance_id = $1", iid)
        assert first is not None, iid
        want = expected_rows(sim, settings.collection, first, last + timedelta(minutes=15), datetime.now(UTC),
                             instances=[iid])
        assert Counter({r: n for r, n in got.items() if r[0] == iid}) == want


def _slices_of(iid: str) -> str:
    return ("SELECT count(*) FROM collected_slices c JOIN instances i ON i.ref = c.instance_ref"
            f" WHERE i.instance_id = '{iid}'")


_FAST = ('\n[scheduler]\ninitial_backfill = "1h"\nrevisits = []\ndiscovery_ttl = "2s"\nretry_after = "1s"\n')
_METRICS = 'granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED", "HANDLE_TIME"]\nservice_levels = []'


@pytest.mark.usefixtures("moto_sts")
async def test_a_fleet_of_accounts_only_is_scheduled_and_rediscovered(
    start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    """[[accounts]] with roles and instances = "discover", no [[instances]]: every instance
    is collected; after discovery_ttl a new one is picked up and a removed one dropped."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=3), throttle=False))
    h.sim.key_resolver = moto_account_of
    accounts = [account_id(0), account_id(1)]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{database_url}"\n\n[collection]\n{_METRICS}\n{_FAST}\n'
                   + _accounts_toml(accounts, ["us-east-1"]))
    settings = load_settings(cfg)
    first, second = list(h.sim.fleet.instances)
    p = serve_procs(cfg)
    for iid in (first, second):
        await wait_sql(database_url, _slices_of(iid), lambda n: n == 4, 90)  # 1 h of 15-minute slices
    await p.wait_status("/readyz", 200, 30)

    added = h.sim.fleet.add_instance(accounts[0], "us-east-1")
    await wait_sql(database_url, _slices_of(added), lambda n: n == 4, 60)
    h.sim.fleet.remove_instance(second)

    async def dropped() -> bool:
        lag = await p.lag()
        return (second, "default") not in lag and {(first, "default"), (added, "default")} <= lag.keys()

    await wait_for(dropped, 60, "the removed instance's lag series is dropped")
    assert await p.stop(signal.SIGTERM) == 0
    assert "no_instances_configured" not in p.output()
    await _expect_exact(database_url, h.sim, settings, [first, added])


async def test_listed_account_instances_are_scheduled_and_readyz_is_red_while_nothing_is_collectable(
    start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(instances_per_account=2, queues_per_instance=3),
                                        throttle=False))
    first, second = list(h.sim.fleet.instances)
    acct = account_id(0)

    def config(name: str, listed: list[str], db: str) -> Path:
        cfg = tmp_path / name
        cfg.write_text(f'[database]\ndsn = "{db}"\n\n[collection]\n{_METRICS}\n{_FAST}\n'
                       f'[[accounts]]\nid = "{acct}"\nregions = ["us-east-1"]\ninstances = {json.dumps(listed)}\n')
        return cfg

    good = config("good.toml", [first], database_url)
    p = serve_procs(good)
    await wait_sql(database_url, _slices_of(first), lambda n: n == 4, 90)
    await p.wait_status("/readyz", 200, 30)
    assert await sql_value(database_url, _slices_of(second)) == 0  # only the listed instance
    assert await p.stop(signal.SIGTERM) == 0
    await _expect_exact(database_url, h.sim, load_settings(good), [first])

    empty = tmp_path / "empty.toml"  # nothing at all to collect
    empty.write_text(f'[database]\ndsn = "{database_url}"\n\n[collection]\n{_METRICS}\n{_FAST}\n')
    e = serve_procs(empty)
    await e.wait_status("/readyz", 503, 30)
    got = await e.get("/readyz")
    assert got is not None and "no [[instances]]" in json.loads(got[1])["reason"]
    assert await e.stop(signal.SIGTERM) == 0

    missing = "00000000-0000-0000-0000-00000000dead"
    bad = config("bad.toml", [missing], database_url)
    q = serve_procs(bad)
    await wait_sql(database_url, "SELECT count(*) FROM collection_runs WHERE $1 = ANY(instances)"
                   " AND status = 'failed'", lambda n: n >= 1, 60, missing)
    got = await q.get("/readyz")
    assert got is not None and got[0] == 503
    reason = json.loads(got[1])["reason"]
    assert missing in reason and "ResourceNotFound" in reason
    assert await q.stop(signal.SIGTERM) == 0


_BROKEN = {
    # (broken instance, reason in the run's errors)
    "unknown id": ("00000000-0000-0000-0000-00000000dead", "ResourceNotFound"),
    "AccessDenied": (None, "AccessDenied"),
    "malformed ListQueues body": (None, "ListQueues body is not JSON"),
}


@pytest.mark.parametrize("case", list(_BROKEN))
async def test_an_instance_that_cannot_be_resolved_fails_every_round_lags_and_ages_into_gaps(
    case: str, start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    from collector.simulator.server import ApiFault
    from tests.cli_run import cli_env, run_cli

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(instances_per_account=2, queues_per_instance=3),
                                        throttle=False))
    good, other = list(h.sim.fleet.instances)
    broken, reason = _BROKEN[case]
    broken = broken or other
    original = h.sim.list_queues

    def list_queues(instance_id: str, region: str, query: Any) -> Any:
        if instance_id == broken and case == "AccessDenied":
            raise ApiFault(403, "AccessDeniedException", f"Not authorized to access instance {broken}")
        if instance_id == broken and case == "malformed ListQueues body":
            return b'{"QueueSummaryList": [{"Id": "q-1", "Arn": '  # truncated
        return original(instance_id, region, query)

    h.sim.list_queues = list_queues  # type: ignore[method-assign]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\ndsn = "{database_url}"\n\n[collection]\n{_METRICS}\n{_FAST}\n'
                   + "".join(f'\n[[instances]]\nid = "{i}"\nregion = "us-east-1"\nqueues = "all"\n'
                             for i in (good, broken)))
    # The broken instance was last collected 25 hours ago: what it misses now ages out.
    done = await run_cli("migrate", "--config", str(cfg), env=cli_env())
    assert done.returncode == 0, done.stderr
    frontier = utc_floor(datetime.now(UTC) - timedelta(hours=25), 900)
    conn = await asyncpg.connect(database_url)
    try:
        ref = await conn.fetchval("INSERT INTO instances (instance_id, region) VALUES ($1, 'us-east-1')"
                                  " RETURNING ref", broken)
        pid = await conn.fetchval("INSERT INTO profiles (name) VALUES ('default') ON CONFLICT (name)"
                                  " DO UPDATE SET name = EXCLUDED.name RETURNING id")
        await conn.execute("INSERT INTO watermarks (instance_ref, profile_id, slice_seconds, frontier, updated_at)"
                           " VALUES ($1, $2, 900, $3, now())", ref, pid, frontier)
    finally:
        await conn.close()

    p = serve_procs(cfg)
    failing = ("SELECT count(*) FROM collection_runs WHERE requested_by = 'scheduler' AND $1 = ANY(instances)"
               " AND status IN ('partial', 'failed') AND errors::text LIKE '%' || $1 || '%'")
    await wait_sql(database_url, failing, lambda n: n >= 2, 60, broken)  # every round, not once
    assert await sql_value(
        database_url, "SELECT count(*) FROM collection_runs WHERE status = 'succeeded' AND $1 = ANY(instances)",
        broken) == 0
    errs = await sql_value(database_url, "SELECT errors::text FROM collection_runs WHERE $1 = ANY(instances)"
                                         " AND status IN ('partial', 'failed') ORDER BY id LIMIT 1", broken)
    assert reason in errs, errs
    gaps = await sql_value(database_url, "SELECT count(*) FROM collection_gaps g JOIN instances i"
                                         " ON i.ref = g.instance_ref WHERE i.instance_id = $1", broken)
    assert gaps >= 4  # the slices between the old frontier and the 24-hour lookback

    lag0 = (await p.lag()).get((broken, "default"))
    assert lag0 is not None and lag0 > 23 * 3600  # since the first slice still in the lookback

    async def lag_grows() -> bool:
        lag = (await p.lag()).get((broken, "default"))
        return lag is not None and lag > lag0

    await wait_for(lag_grows, 30, "the broken instance's lag grows")
    gauges = await p.get("/metrics")
    assert gauges is not None and b'collector_gaps_total{connect_instance="' + broken.encode() in gauges[1]
    await p.wait_status("/readyz", 200, 10)  # the good instance is collectable
    await wait_sql(database_url, _slices_of(good), lambda n: n == 4, 60)
    assert await p.stop(signal.SIGTERM) == 0
    h.sim.list_queues = original  # type: ignore[method-assign]
    await _expect_exact(database_url, h.sim, load_settings(cfg), [good])

    # The alert rules watch exactly these series (promtool tests in ops/prometheus/tests).
    rules = (Path(__file__).parent.parent / "ops/prometheus/alerts.yml").read_text()
    for alert, series in (("CollectorLagHigh", "collector_collection_lag_seconds"),
                          ("CollectorGaps", "collector_gaps_total"), ("CollectorRunsFailing", "collector_runs_total")):
        assert f"alert: {alert}" in rules and series in rules


async def test_a_thousand_unfinished_one_off_runs_resume_without_a_crash_loop(
    start_sim: StartSim, database_url: str, serve_procs: ServeProcs, tmp_path: Path
) -> None:
    from tests.cli_run import cli_env, run_cli

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       collection='granularity = "15m"\ngroupings = ["QUEUE"]\nmetrics = ["CONTACTS_HANDLED"]\n'
                                  'service_levels = []',
                       extra='\n[scheduler]\nenabled = false\n\n[aws]\nget_metric_data_rate = 200.0\n'
                             'get_metric_data_burst = 200\n', queues=json.dumps(list(
                           next(iter(h.sim.fleet.instances.values())).queues)))
    done = await run_cli("migrate", "--config", str(cfg), env=cli_env())
    assert done.returncode == 0, done.stderr
    start, end = _range(0.25)
    conn = await asyncpg.connect(database_url)
    try:  # a crash left 500 runs running and 500 queued
        await conn.execute(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " SELECT 'api', 'default', $1, $2, '{}', CASE WHEN n % 2 = 0 THEN 'running' ELSE 'queued' END"
            " FROM generate_series(1, 1000) AS n", start, end)
    finally:
        await conn.close()

    p = serve_procs(cfg)
    await wait_sql(database_url, "SELECT count(*) FROM collection_runs WHERE status = 'succeeded'",
                   lambda n: n == 1000, 300)
    assert p.alive()
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs") == 2000
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE status = 'interrupted'"
                                         " AND id IN (SELECT resumed_from FROM collection_runs)") == 1000
    assert await p.stop(signal.SIGTERM) == 0
    out = p.output()
    assert out.count("api_listening") == 1 and "Traceback" not in out  # one start, no crash
    assert await stored_rows(database_url) == expected_rows(
        h.sim, load_settings(cfg).collection, start, end, datetime.now(UTC))
