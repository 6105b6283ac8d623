"""Issue 18 with real `collector serve` processes against the simulator and a real Postgres:
replicas whose configs differ, the queue cap in a cluster, retention between replicas."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import StartSim, write_config
from tests.helpers import query
from tests.procs import ServeProcs, sql_value, wait_for, wait_sql

TTL = 2.0
COLLECTION = ('granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED"]\n'
              "service_levels = []")
CLUSTER = (f'\n[scheduler]\ninitial_backfill = "1h"\nrevisits = []\n\n[aws]\nworkers_per_account = 1\n'
           f'\n[cluster]\nenabled = true\nlease_ttl = {TTL}\n')


async def _holders(url: str) -> dict[str, str]:
    rows = await query(url, "SELECT account, owner FROM shard_leases WHERE owner IS NOT NULL AND expires_at > now()")
    return {r["account"]: r["owner"] for r in rows}


async def _collected(url: str) -> dict[str, int]:
    rows = await query(url, "SELECT i.account, count(*) AS n FROM collected_slices c"
                            " JOIN instances i ON i.ref = c.instance_ref GROUP BY i.account")
    return {r["account"]: r["n"] for r in rows}


async def test_a_replica_claims_only_shards_its_config_serves_and_an_unserved_one_is_visible(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 2: a rolling deploy adds account B. The new replica holds A and B; an old one
    (config: A only) joins and must not take B (before: it claimed B from the rebalance and
    never collected it). When the new replica dies, B is unserved: /cluster, both /readyz
    (503), collector_shards_unserved."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=2), throttle=False))
    new_cfg = write_config(tmp_path / "new.toml", database_url, h.sim, collection=COLLECTION, extra=CLUSTER)
    a, b = sorted({i.account for i in h.sim.fleet.instances.values()})
    old_text = new_cfg.read_text().split("\n[[instances]]")
    old_cfg = tmp_path / "old.toml"
    old_cfg.write_text("\n[[instances]]".join([old_text[0], *[x for x in old_text[1:] if f'"{a}"' in x]]))
    new = serve_procs(new_cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-new"})

    async def new_holds_both() -> bool:
        return await _holders(database_url) == {a: "r-new", b: "r-new"}

    await wait_for(new_holds_both, 30, lambda: new.output()[-3000:])
    old = serve_procs(old_cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-old"})

    async def split() -> bool:
        return len(set((await _holders(database_url)).values())) == 2

    await wait_for(split, 30, lambda: f"{old.output()[-2000:]}\n{new.output()[-2000:]}")
    assert await _holders(database_url) == {a: "r-old", b: "r-new"}

    async def both_collected() -> bool:
        got = await _collected(database_url)
        return got.get(a, 0) >= 4 and got.get(b, 0) >= 4

    await wait_for(both_collected, 60, lambda: old.output()[-3000:])
    new.proc.send_signal(signal.SIGKILL)  # the only replica that can serve B dies

    async def b_unserved() -> bool:
        got = await old.get("/cluster")
        return got is not None and orjson.loads(got[1]).get("unserved_shards") == [{"account": b,
                                                                                    "region": "us-east-1"}]

    await wait_for(b_unserved, 30, lambda: old.output()[-3000:])
    await old.wait_status("/readyz", 503, 15)
    got = await old.get("/readyz")
    assert got is not None and b in orjson.loads(got[1])["reason"]
    metrics = await old.get("/metrics")
    assert metrics is not None and "collector_shards_unserved 1.0" in metrics[1].decode()
    assert a in (await _holders(database_url)).keys() - {b}  # r-old still serves A, and never took B
    assert (await _holders(database_url)).get(b) != "r-old"
    assert "shards_unserved" in old.output()
    assert await old.stop() == 0


async def test_a_full_queue_answers_429_with_retry_after_in_cluster_mode(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 7: the bounded one-off queue holds with leases on too (before: every POST got 202)."""
    import asyncpg

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra=CLUSTER.replace("[scheduler]\n", "[scheduler]\nenabled = false\n"))
    p = serve_procs(cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-1"})
    await p.wait_status("/readyz", 200, 60)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now - timedelta(hours=1)
    conn = await asyncpg.connect(database_url)  # 100 runs wait on a shard no replica here serves
    try:
        await conn.execute(
            "WITH r AS (INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " SELECT 'api', 'default', $1, $2, '{}', 'queued' FROM generate_series(1, 100) RETURNING id)"
            " INSERT INTO run_parts (run_id, account, region) SELECT id, '999999999999', 'us-east-1' FROM r",
            start, end)
    finally:
        await conn.close()
    runs = await sql_value(database_url, "SELECT count(*) FROM collection_runs")
    body = {"start": start.isoformat(), "end": end.isoformat()}
    status, raw, headers = await p.response("POST", "/collections", json=body)
    assert status == 429, raw
    assert int(headers["Retry-After"]) > 0
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs") == runs  # nothing recorded
    assert await p.stop() == 0


async def test_a_running_serve_does_not_adopt_a_cli_side_run_beside_it(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 10: a `collector sandbox` (or any CLI-side) run in flight beside a serve has no
    owner; the serve adopts only runs a service started (before: it adopted the sandbox's
    and collected its slices a second time)."""
    import asyncpg

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra="\n[scheduler]\nenabled = false\n")
    from tests.cli_run import run_cli

    assert (await run_cli("migrate", "--config", str(cfg))).returncode == 0
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now - timedelta(hours=1)
    conn = await asyncpg.connect(database_url)
    try:
        ids = {by: await conn.fetchval(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " VALUES ($1, 'default', $2, $3, '{}', 'running') RETURNING id", by, start, end)
            for by in ("sandbox", "cli", "api")}  # two CLI-side runs in flight; one a dead service left
    finally:
        await conn.close()
    p = serve_procs(cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-1"})
    await wait_sql(database_url, "SELECT count(*) FROM collection_runs WHERE resumed_from = $1", lambda n: n == 1,
                   60, ids["api"])  # the control: the dead service's run is resumed
    rows = await query(database_url, "SELECT id, status, adopted_at FROM collection_runs ORDER BY id")
    by_id = {r["id"]: r for r in rows}
    for by in ("sandbox", "cli"):
        assert by_id[ids[by]]["status"] == "running" and by_id[ids[by]]["adopted_at"] is None, by
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE resumed_from IS NOT NULL") == 1
    assert await p.stop() == 0


async def test_runs_whose_start_aged_out_resume_clipped_with_gaps(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 5: a one-off run interrupted by a dead service, and one that waited in the
    queue, whose start is now past the lookback (and its margin): each runs from the
    earliest slice still served, and the slices before it are gaps and the run's failures
    (before: the first was `run_not_resumed`, 0 slices; the second `failed`)."""
    import asyncpg

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra="\n[scheduler]\nenabled = false\n")
    from tests.cli_run import run_cli

    assert (await run_cli("migrate", "--config", str(cfg))).returncode == 0
    edge = datetime.now(UTC) - timedelta(hours=24)
    start = edge.replace(minute=edge.minute - edge.minute % 15, second=0, microsecond=0) - timedelta(minutes=30)
    end = start + timedelta(hours=2)  # 8 slices; the first 3 or 4 are past the lookback and its 10-minute margin
    conn = await asyncpg.connect(database_url)
    try:
        ids = [await conn.fetchval(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status)"
            " VALUES ('api', 'default', $1, $2, '{}', $3) RETURNING id", start, end, status)
            for status in ("running", "queued")]  # a dead service's run in flight; a run that waited
    finally:
        await conn.close()
    p = serve_procs(cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-1"})
    # both were a dead service's (no owner): each is resumed by a queued run of its own,
    # which the one-off loop executes (the path of a run that waited in the queue)
    for old in ids:
        run_id = await wait_sql(database_url, "SELECT id FROM collection_runs WHERE resumed_from = $1", bool, 60, old)
        await wait_sql(database_url, "SELECT status FROM collection_runs WHERE id = $1",
                       lambda s: s not in ("queued", "running"), 60, run_id)
        run = (await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}"))[0]
        assert run["status"] == "partial", dict(run)
        assert run["slices_total"] == 8 and 3 <= run["slices_failed"] <= 4 and run["slices_done"] == 8 - run[
            "slices_failed"], dict(run)
        assert all("aged out" in e["reason"] for e in orjson.loads(run["errors"])), run["errors"]
    gaps = await sql_value(database_url, "SELECT count(*) FROM collection_gaps")
    assert 3 <= gaps <= 4  # one per aged-out slice of the instance, recorded once for both runs
    assert "run_not_resumed" not in p.output()
    assert await p.stop() == 0
