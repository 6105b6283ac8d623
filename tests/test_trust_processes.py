"""Issue 18 with real `collector serve` processes against the simulator and a real Postgres:
replicas whose configs differ, the queue cap in a cluster, retention between replicas."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
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


V2_QUEUES = """
[[profiles]]
name = "queues"
api = "v2"
interval = "{interval}"
initial_backfill = "3h"
groupings = ["QUEUE"]
metrics = ["CONTACTS_HANDLED"]
[profiles.filters]
queues = "all"
"""


async def _scheduler_run_done(url: str, after: int, profile: str, p: Any) -> Any:
    """The first scheduler run after run id ``after`` that collected ``profile`` and ended."""
    try:
        return await wait_sql(
            url, "SELECT id FROM collection_runs WHERE requested_by = 'scheduler' AND id > $1"
                 " AND $2 = ANY(string_to_array(profile, ',')) AND status NOT IN ('queued', 'running')"
                 " ORDER BY id LIMIT 1", bool, 60, after, profile)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{p.output()[-3000:]}") from None


async def test_an_interval_edit_restarts_cleanly_through_real_serve_processes(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 1 through `collector serve`: a V2 profile collected at 15m, edited to 1h and the
    service restarted. The old rows stay queryable and are neither counted as the new
    series' hours nor revisited; the new series starts cleanly (no `not on a HOUR
    boundary`); the log says `profile_changed`. Between the two starts the old slices'
    collection times are set to just after their ends (as if collected before a revisit
    point), so that a revisit of them would be due had the old series kept matching."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    sched = '\n[scheduler]\nsettle = "1m"\nrevisits = ["1h"]\n'
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra=sched + V2_QUEUES.format(interval="15m"))
    p = serve_procs(cfg)
    first = await _scheduler_run_done(database_url, 0, "queues", p)
    assert await p.stop() == 0
    run = (await query(database_url, f"SELECT status, slices_failed FROM collection_runs WHERE id = {first}"))[0]
    assert run["status"] == "succeeded", dict(run)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE collected_slices SET last_collected_at = slice_start"
                           " + make_interval(secs => slice_seconds + 60)")
        old = await conn.fetch("SELECT slice_start, times_collected FROM collected_slices c"
                               " JOIN profiles p ON p.id = c.profile_id WHERE p.name = 'queues' ORDER BY 1")
        old_values = await conn.fetchval("SELECT count(*) FROM historical_metrics WHERE profile = 'queues'")
        last_run = await conn.fetchval("SELECT max(id) FROM collection_runs")
    finally:
        await conn.close()
    assert len(old) >= 8 and any(r["slice_start"].minute for r in old) and old_values > 0
    assert any(r["slice_start"] + timedelta(minutes=75) <= datetime.now(UTC) for r in old)  # revisits would be due

    cfg.write_text(cfg.read_text().replace('interval = "15m"', 'interval = "1h"'))
    p2 = serve_procs(cfg)
    run_id = await _scheduler_run_done(database_url, last_run, "queues", p2)
    assert await p2.stop() == 0
    out = p2.output()
    assert "profile_changed" in out and "HOUR boundary" not in out, out[-3000:]
    runs = await query(database_url, f"SELECT id, status, slices_failed, errors FROM collection_runs WHERE id > {last_run}")
    assert runs and all(r["status"] in ("succeeded", "interrupted") and r["slices_failed"] == 0 for r in runs), [
        dict(r) for r in runs]
    assert next(r for r in runs if r["id"] == run_id)["status"] == "succeeded"
    rows = await query(database_url, "SELECT slice_start, slice_seconds, times_collected FROM collected_slices c"
                                     " JOIN profiles p ON p.id = c.profile_id WHERE p.name = 'queues' ORDER BY 1")
    quarter = [(r["slice_start"], r["times_collected"]) for r in rows if r["slice_seconds"] == 900]
    hours = [r["slice_start"] for r in rows if r["slice_seconds"] == 3600]
    assert quarter == [(r["slice_start"], r["times_collected"]) for r in old]  # kept, and not revisited
    assert len(hours) >= 2 and all(t.minute == 0 for t in hours)  # the new series, from its backfill
    # hours with a 15-minute slice starting at them were collected all the same
    assert len(set(hours) & {r["slice_start"] for r in old}) >= 2
    assert await sql_value(database_url, "SELECT count(*) FROM historical_metrics WHERE profile = 'queues'"
                                         " AND interval_end - interval_start = interval '15 minutes'") == old_values


async def _part(url: str, run_id: int) -> Any:
    rows = await query(url, f"SELECT status, claimed_by FROM run_parts WHERE run_id = {run_id}")
    return (rows[0]["status"], rows[0]["claimed_by"]) if rows else None


async def _two_replicas(cfg_a: Path, cfg_b: Path, url: str, serve_procs: ServeProcs,
                        split: bool) -> tuple[Any, Any]:
    """r-a, then r-b once r-a holds every shard; with ``split``, until each holds one."""
    a = serve_procs(cfg_a, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-a"})

    async def a_holds() -> bool:
        got = await _holders(url)
        return bool(got) and set(got.values()) == {"r-a"}

    await wait_for(a_holds, 30, lambda: a.output()[-3000:])
    b = serve_procs(cfg_b, env={"COLLECTOR_CLUSTER__REPLICA_ID": "r-b"})
    await b.wait_status("/readyz", 200, 30)
    if split:
        async def both() -> bool:
            return set((await _holders(url)).values()) == {"r-a", "r-b"}

        await wait_for(both, 30, lambda: b.output()[-3000:])
    else:
        await wait_sql(url, "SELECT count(*) FROM replicas WHERE id = 'r-b'", lambda n: n == 1, 30)
    return a, b


async def _post_run(p: Any, body: dict[str, Any]) -> int:
    status, raw, _h = await p.response("POST", "/collections", json=body)
    assert status == 202, raw
    return int(orjson.loads(raw)["id"])


async def test_after_one_replica_drops_a_day_the_others_write_into_it_succeeds(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 3 through two `collector serve` replicas: r-a prunes (retention 1 day, every
    second), r-b does not. A V2 run three days back writes that day from both; r-a drops
    the day's partition; a second run into the day is written by r-b, whose partition
    cache still has the day (`partition_gone`), and ends: no run wedged, nothing queued."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=2), throttle=False))
    cluster = CLUSTER.replace("[scheduler]\n", "[scheduler]\nenabled = false\n")
    cfg_b = write_config(tmp_path / "b.toml", database_url, h.sim, collection=COLLECTION,
                         extra=cluster + V2_QUEUES.format(interval="1h"))
    cfg_a = tmp_path / "a.toml"
    cfg_a.write_text(cfg_b.read_text().replace("[cluster]\n", '[storage]\nretention_days = 1\nprune_every = "1s"\n\n'
                                               "[cluster]\n", 1))
    a, b = await _two_replicas(cfg_a, cfg_b, database_url, serve_procs, split=True)
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    body = {"start": day.isoformat(), "end": (day + timedelta(hours=2)).isoformat(), "profile": "queues"}
    partition = f"metric_values_{day:%Y%m%d}"
    terminal = "SELECT status FROM collection_runs WHERE id = $1 AND status NOT IN ('queued', 'running')"
    b_account = next(acct for acct, owner in (await _holders(database_url)).items() if owner == "r-b")
    b_instance = next(i.id for i in h.sim.fleet.instances.values() if i.account == b_account)
    # first both replicas write the day; then (after r-a dropped it) r-b alone, so nothing
    # else makes the day's partition again before r-b's write
    for n, instances, slices, holders in ((1, None, 4, {"r-a", "r-b"}), (2, [b_instance], 2, {"r-b"})):
        run_id = await _post_run(b, {**body, "instances": instances} if instances else body)
        status = await wait_sql(database_url, terminal, bool, 30, run_id)
        run = (await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}"))[0]
        assert status == "succeeded" and run["slices_done"] == slices and run["slices_failed"] == 0, dict(run)
        parts = await query(database_url, f"SELECT claimed_by, status FROM run_parts WHERE run_id = {run_id}")
        assert {(r["claimed_by"], r["status"]) for r in parts} == {(r, "done") for r in holders}
        if n == 1:  # r-a's retention drops the day r-b has just written into
            await wait_sql(database_url, "SELECT count(*) FROM pg_tables WHERE tablename = $1", lambda c: c == 0, 30,
                           partition)
    assert "partition_gone" in b.output() and "partitions_dropped" in a.output()
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs WHERE status IN ('queued', 'running')") == 0
    assert await a.stop() == 0 and await b.stop() == 0


async def test_a_stalled_holder_cannot_settle_a_part_another_replica_took_over(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """Item 4 through two `collector serve` replicas: r-a's fetch of its part is in flight
    when it is SIGSTOPped; r-b takes the lease and the part over and collects it, and the
    run succeeds. Then r-a resumes with its answer: its write is fenced and it puts the
    part back only if it still held it, so the part and the run stay r-b's end."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra=CLUSTER.replace("[scheduler]\n", "[scheduler]\nenabled = false\n"))
    a, b = await _two_replicas(cfg, cfg, database_url, serve_procs, split=False)
    h.sim.hold = asyncio.Event()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    run_id = await _post_run(a, {"start": (end - timedelta(minutes=15)).isoformat(), "end": end.isoformat()})
    await wait_for(lambda: _is(h.sim.held == 1), 30, lambda: a.output()[-3000:])
    assert await _part(database_url, run_id) == ("running", "r-a")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        async def b_took_it() -> bool:
            return await _part(database_url, run_id) == ("running", "r-b") and h.sim.held == 2

        await wait_for(b_took_it, 30, lambda: b.output()[-3000:])
        h.sim.hold.set()  # r-b's fetch is answered (and r-a's, which it cannot read yet)
        status = await wait_sql(database_url, "SELECT status FROM collection_runs WHERE id = $1"
                                " AND status NOT IN ('queued', 'running')", bool, 30, run_id)
        assert status == "succeeded"
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # r-a ends its (fenced) work on the part: `run_finished` is logged however it ends it
    await wait_for(lambda: _is('"run_finished"' in a.output()), 30, lambda: a.output()[-3000:])
    run = (await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}"))[0]
    assert (run["status"], run["slices_done"], run["slices_failed"]) == ("succeeded", 1, 0), dict(run)
    assert await _part(database_url, run_id) == ("done", "r-b")
    times = await query(database_url, "SELECT times_collected FROM collected_slices")
    assert [r["times_collected"] for r in times] == [1]  # r-b's write only; r-a's was fenced
    assert await a.stop() == 0 and await b.stop() == 0


async def _is(value: bool) -> bool:
    return value


async def test_a_stopping_replica_keeps_its_leases_while_its_in_flight_slices_finish(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """SIGTERM while a fetch is in flight, with a grace period far longer than the lease
    TTL: the stopping replica keeps heartbeating and renewing its lease until the work is
    done (before: the lease loop ended with the stop, the lease expired mid-grace, r-b took
    the shard and fenced r-a's write, and collected the slice a second time). Then it
    releases the lease, and r-b takes it."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra=CLUSTER.replace("[scheduler]\n", "[scheduler]\nenabled = false\ngrace_period = 60\n"))
    a, b = await _two_replicas(cfg, cfg, database_url, serve_procs, split=False)
    h.sim.hold = asyncio.Event()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    run_id = await _post_run(a, {"start": (end - timedelta(minutes=15)).isoformat(), "end": end.isoformat()})
    await wait_for(lambda: _is(h.sim.held == 1), 30, lambda: a.output()[-3000:])
    assert await _part(database_url, run_id) == ("running", "r-a")
    a.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: _is("shutdown_requested" in a.output()), 30, lambda: a.output()[-3000:])
    lease = "SELECT owner, expires_at FROM shard_leases"
    expiry = (await query(database_url, lease))[0]["expires_at"]  # when the lease ends unless renewed

    async def renewed_past_it_or_lost() -> bool:
        row = (await query(database_url, lease))[0]
        return bool(row["owner"] != "r-a" or row["expires_at"] >= expiry + timedelta(seconds=TTL))

    await wait_for(renewed_past_it_or_lost, 30, lambda: a.output()[-3000:])
    row = (await query(database_url, lease))[0]
    assert row["owner"] == "r-a", f"the lease moved to {row['owner']} during r-a's grace period"
    assert a.alive()  # still in its grace period, the fetch still waiting
    h.sim.hold.set()
    rc = await anyio.to_thread.run_sync(lambda: a.proc.wait(60))
    assert rc == 0, a.output()[-3000:]
    run = (await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}"))[0]
    assert (run["status"], run["slices_done"], run["slices_failed"]) == ("succeeded", 1, 0), dict(run)
    assert await _part(database_url, run_id) == ("done", "r-a")
    assert h.sim.stats.by_op_status[("GetMetricData", 200)] == 1  # collected once, by r-a
    assert "lease_lost" not in a.output()

    async def b_holds() -> bool:
        return set((await _holders(database_url)).values()) == {"r-b"}

    await wait_for(b_holds, 30, lambda: b.output()[-3000:])
    await a.stop()
    assert await b.stop() == 0


async def test_a_stopping_single_node_keeps_its_heartbeat_while_its_run_finishes(
    start_sim: StartSim, database_url: str, tmp_path: Path, serve_procs: ServeProcs
) -> None:
    """The same on single nodes sharing a database (a rolling deploy's successor starts
    while the old process is in its grace period): the stopping one keeps heartbeating
    until its run is done, so the other does not take the run for a dead replica's and
    collect it again (before: the heartbeat ended with the stop, and after `lease_ttl`
    the other resumed the run)."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, collection=COLLECTION,
                       extra=f"\n[scheduler]\nenabled = false\ngrace_period = 60\n\n[cluster]\nlease_ttl = {TTL}\n")
    procs = {r: serve_procs(cfg, env={"COLLECTOR_CLUSTER__REPLICA_ID": r}) for r in ("r-a", "r-b")}
    for p in procs.values():
        await p.wait_status("/readyz", 200, 30)
    h.sim.hold = asyncio.Event()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    run_id = await _post_run(procs["r-a"], {"start": (end - timedelta(minutes=15)).isoformat(),
                                            "end": end.isoformat()})
    await wait_for(lambda: _is(h.sim.held == 1), 30)
    owner = await sql_value(database_url, "SELECT owner FROM collection_runs WHERE id = $1", run_id)
    stopping, other = procs[owner], procs[({"r-a", "r-b"} - {owner}).pop()]
    stopping.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: _is("shutdown_requested" in stopping.output()), 30)
    beat = "SELECT heartbeat_at FROM replicas WHERE id = $1"
    last = await sql_value(database_url, beat, owner)  # dead for the others a TTL after it, unless renewed
    resumed = "SELECT count(*) FROM collection_runs WHERE resumed_from IS NOT NULL"

    async def beat_past_it_or_resumed() -> bool:
        now_beat = await sql_value(database_url, beat, owner)
        return bool(await sql_value(database_url, resumed) or now_beat >= last + timedelta(seconds=TTL))

    await wait_for(beat_past_it_or_resumed, 30, lambda: other.output()[-3000:])
    assert await sql_value(database_url, resumed) == 0, other.output()[-3000:]
    assert stopping.alive()
    h.sim.hold.set()
    rc = await anyio.to_thread.run_sync(lambda: stopping.proc.wait(60))
    assert rc == 0, stopping.output()[-3000:]
    run = (await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}"))[0]
    assert (run["status"], run["slices_done"], run["slices_failed"]) == ("succeeded", 1, 0), dict(run)
    assert await sql_value(database_url, "SELECT count(*) FROM collection_runs") == 1
    assert h.sim.stats.by_op_status[("GetMetricData", 200)] == 1
    await stopping.stop()
    assert await other.stop() == 0
