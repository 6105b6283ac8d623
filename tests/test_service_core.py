"""The restructured service core: every run enters through submit(), listings are
counted, and any number of unfinished runs resume (real Postgres, real botocore,
the simulator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.config import Settings, load_settings
from collector.simulator import FleetSpec, SimulatorConfig
from collector.simulator.fleet import account_id
from collector.wiring import serve
from tests.conftest import StartSim, write_config
from tests.helpers import query, utc_floor
from tests.test_fleets import _accounts_toml, _config, _free_port, moto_account_of, moto_sts  # noqa: F401


def _requests(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "collector_api_requests_total":
                out[(s.labels["operation"], s.labels["outcome"])] = s.value
    return out


@pytest.mark.usefixtures("moto_sts")
async def test_list_queues_and_list_instances_are_counted_in_metrics(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=3), throttle=False))
    h.sim.key_resolver = moto_account_of
    port = _free_port()
    body = _accounts_toml([account_id(0), account_id(1)], ["us-east-1"])
    settings = load_settings(_config(tmp_path / "c.toml", database_url,
                                     body + f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\n"))
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    stop, ready, done = anyio.Event(), anyio.Event(), anyio.Event()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(settings, stop=stop, handle_signals=False,
                                    on_ready=lambda _u: ready.set(), on_run_finished=lambda _i: done.set()))
        with anyio.fail_after(30):
            await ready.wait()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/metrics") as r:
                before = _requests(await r.text())
            payload = {"start": (end - timedelta(minutes=15)).isoformat(), "end": end.isoformat()}
            async with http.post("/collections", json=payload) as r:
                assert r.status == 202, await r.text()
            with anyio.fail_after(60):
                await done.wait()
            async with http.get("/metrics") as r:
                after = _requests(await r.text())
        stop.set()

    def delta(op: str) -> float:
        return after.get((op, "ok"), 0.0) - before.get((op, "ok"), 0.0)

    assert delta("ListInstances") == 2  # one page per (account, Region)
    assert delta("ListQueues") == 2  # one page per discovered instance
    assert delta("GetMetricData") >= 2


def _single(tmp_path: Path, database_url: str, sim: Any, extra: str = "") -> Settings:
    cfg = write_config(
        tmp_path / "c.toml", database_url, sim,
        collection='granularity = "15m"\ngroupings = ["QUEUE"]\nmetrics = ["CONTACTS_HANDLED"]\nservice_levels = []',
        extra="\n[scheduler]\nenabled = false\n" + extra, queues='["q-1"]',
    )
    return load_settings(cfg)


async def _insert_runs(database_url: str, n: int, status: str, start: datetime, end: datetime) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, status)"
            " VALUES ('api', 'default', $1, $2, $3)",
            [(start, end, status)] * n,
        )
    finally:
        await conn.close()


async def _migrate(settings: Settings) -> None:
    from collector.wiring import runtime

    async with runtime(settings):
        pass


async def test_a_thousand_unfinished_runs_resume_through_submit_without_crashing(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=1), throttle=False))
    settings = _single(tmp_path, database_url, h.sim)
    await _migrate(settings)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    start = end - timedelta(minutes=15)
    await _insert_runs(database_url, 600, "queued", start, end)
    await _insert_runs(database_url, 400, "running", start, end)

    stop = anyio.Event()
    finished: list[int] = []

    def on_finished(run_id: int) -> None:
        finished.append(run_id)
        if len(finished) == 3:
            stop.set()

    with anyio.fail_after(120):
        await serve(settings, stop=stop, with_api=False, handle_signals=False, on_run_finished=on_finished)

    old = await query(database_url, "SELECT id, status FROM collection_runs WHERE requested_by = 'api'")
    new = await query(database_url, "SELECT id, status, resumed_from FROM collection_runs"
                                    " WHERE requested_by = 'resume' ORDER BY id")
    assert len(old) == 1000 and {r["status"] for r in old} == {"interrupted"}
    assert sorted(r["resumed_from"] for r in new) == sorted(r["id"] for r in old)  # each once
    by_id = {r["id"]: r["status"] for r in new}
    assert [by_id[i] for i in finished] == ["succeeded"] * 3
    assert finished == [r["id"] for r in new][:3]  # oldest first
    assert {r["status"] for r in new[3:]} <= {"queued", "interrupted", "succeeded"}


async def test_a_run_whose_part_was_on_a_dead_replica_continues_in_place_under_leases(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=3, queues_per_instance=1), throttle=False))
    settings = _single(tmp_path, database_url, h.sim,
                       '\n[cluster]\nenabled = true\nlease_ttl = 3.0\nreplica_id = "r1"\n')
    await _migrate(settings)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    await _insert_runs(database_url, 1, "running", end - timedelta(minutes=30), end)
    old = (await query(database_url, "SELECT id FROM collection_runs"))[0]["id"]
    conn = await asyncpg.connect(database_url)
    try:  # the replica that died had split it into parts; one was running
        shards = sorted({(i.account, i.region) for i in h.sim.fleet.instances.values()})
        await conn.executemany("INSERT INTO run_parts (run_id, account, region, status, claimed_by)"
                               " VALUES ($1, $2, $3, $4, $5)",
                               [(old, a, r, "queued", None) for a, r in shards[1:]]
                               + [(old, shards[0][0], shards[0][1], "running", "r0")])
    finally:
        await conn.close()

    stop = anyio.Event()
    done: list[int] = []

    def on_finished(run_id: int) -> None:
        done.append(run_id)
        stop.set()

    with anyio.fail_after(60):
        await serve(settings, stop=stop, with_api=False, handle_signals=False, on_run_finished=on_finished)

    runs = await query(database_url, "SELECT id, status, requested_by, resumed_from, slices_total, slices_done"
                                     " FROM collection_runs ORDER BY id")
    # Its parts are the run's resumption: the dead replica's part went back to the queue.
    assert [(r["id"], r["status"], r["requested_by"]) for r in runs] == [(old, "succeeded", "api")]
    assert done == [old]
    assert runs[0]["slices_total"] == runs[0]["slices_done"] == 3 * 2
    parts = await query(database_url, f"SELECT account, region, status, claimed_by FROM run_parts WHERE run_id = {old}")
    assert len(parts) == 3  # one per (account, Region) shard
    assert {(p["status"], p["claimed_by"]) for p in parts} == {("done", "r1")}


async def test_a_lease_claimed_from_a_replica_that_did_not_release_it_counts_as_a_takeover(
    database_url: str,
) -> None:
    from prometheus_client import REGISTRY

    from collector.adapters.postgres import PgStore, connect_pool, migrate

    def takeovers() -> float:
        return REGISTRY.get_sample_value("collector_lease_takeovers_total") or 0.0

    pool = await connect_pool(database_url, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        old, new = PgStore(pool, replica="r-old"), PgStore(pool, replica="r-new")
        shards = [("111111111111", "us-east-1"), ("222222222222", "us-east-1")]
        await old.ensure_shards(shards)
        start = takeovers()
        assert len(await old.claim_leases("r-old", 30, 2, shards)) == 2
        await old.release_leases("r-old", shards[1:])  # handed back: not a takeover
        await pool.execute("UPDATE shard_leases SET expires_at = now() - interval '1 second'"
                           " WHERE owner = 'r-old'")  # r-old stalls past its TTL on the other
        assert len(await new.claim_leases("r-new", 30, 2, shards)) == 2
        assert takeovers() == start + 1
    finally:
        await pool.close()
