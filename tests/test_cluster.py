"""Scale-out: replicas share the fleet through Postgres leases (real Postgres, real clock)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from collector.adapters.postgres import PgStore, connect_pool, migrate
from collector.apis.v1.planner import metric_chunks
from collector.apis.v1.unit import CODEC
from collector.config import Settings, load_settings
from collector.model import SliceKey
from collector.ports import CompletedSlice
from collector.simulator import FleetSpec, SimulatorConfig
from collector.wiring import serve
from tests.conftest import StartSim, write_config
from tests.helpers import lease_owners, query, stored_rows, wait_until

TTL = 3.0


def _settings(tmp_path: Path, database_url: str, sim: Any, replica: str, backfill: str = "1h") -> Settings:
    cfg = write_config(
        tmp_path / f"{replica}.toml", database_url, sim,
        collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED", "HANDLE_TIME"]\nservice_levels = []',
        extra=(f'\n[scheduler]\ninitial_backfill = "{backfill}"\nrevisits = []\n'
               f'\n[aws]\nworkers_per_account = 1\n'
               f'\n[cluster]\nenabled = true\nlease_ttl = {TTL}\nreplica_id = "{replica}"\n'),
    )
    return load_settings(cfg)


_q = query
_owners = lease_owners
_until = wait_until


async def _slices(database_url: str) -> int:
    rows = await _q(database_url, "SELECT count(*) AS n FROM collected_slices")
    return int(rows[0]["n"]) if rows else 0


class Replica:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = anyio.Event()
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            await serve(self.settings, stop=self.stop, with_api=False, handle_signals=False)


@pytest.fixture
def fleet9() -> SimulatorConfig:
    return SimulatorConfig(fleet=FleetSpec(accounts=9, queues_per_instance=3), latency=0.05)


async def test_three_replicas_split_nine_accounts_and_collect_each_slice_once(
    start_sim: StartSim, database_url: str, tmp_path: Path, fleet9: SimulatorConfig
) -> None:
    h = await start_sim(fleet9)
    replicas = [Replica(_settings(tmp_path, database_url, h.sim, f"r{i}")) for i in range(3)]
    async with anyio.create_task_group() as tg:
        for r in replicas:
            tg.start_soon(r.run)

        async def balanced() -> bool:
            return sorted((await _owners(database_url)).values()) == [3, 3, 3]

        await _until(balanced, 20)

        async def all_collected() -> bool:
            return await _slices(database_url) >= 9 * 4

        await _until(all_collected, 60)
        assert sorted((await _owners(database_url)).values()) == [3, 3, 3]
        for r in replicas:
            r.stop.set()
    times = await _q(database_url, "SELECT times_collected AS n FROM collected_slices")
    assert len(times) == 36 and {r["n"] for r in times} == {1}  # every slice exactly once
    assert h.sim.stats.by_status.get(429, 0) == 0  # no account was ever driven past its quota
    assert max(n for n in (await stored_rows(database_url)).values()) == 1
    assert await _owners(database_url) == {}  # graceful stops handed everything back


async def test_a_dead_replica_is_taken_over_within_two_ttls_and_nothing_is_lost(
    start_sim: StartSim, database_url: str, tmp_path: Path, fleet9: SimulatorConfig
) -> None:
    h = await start_sim(fleet9)
    replicas = [Replica(_settings(tmp_path, database_url, h.sim, f"r{i}", backfill="6h")) for i in range(3)]
    async with anyio.create_task_group() as tg:
        for r in replicas:
            tg.start_soon(r.run)

        async def balanced() -> bool:
            return sorted((await _owners(database_url)).values()) == [3, 3, 3]

        await _until(balanced, 20)

        async def some() -> bool:
            return await _slices(database_url) >= 20

        await _until(some, 60)
        replicas[0].scope.cancel()  # dies without handing anything back
        died = time.monotonic()

        async def taken_over() -> bool:
            owners = await _owners(database_url)
            return "r0" not in owners and sum(owners.values()) == 9

        await _until(taken_over, 4 * TTL)
        took = time.monotonic() - died
        assert took <= 2 * TTL + 1.0, took

        async def all_collected() -> bool:
            return await _slices(database_url) >= 9 * 24

        await _until(all_collected, 90)
        for r in replicas[1:]:
            r.stop.set()
    takeovers = await _q(database_url, "SELECT sum(takeovers) AS n FROM shard_leases")
    assert takeovers[0]["n"] >= 3
    times = await _q(database_url, "SELECT times_collected AS n FROM collected_slices")
    assert len(times) == 9 * 24 and {r["n"] for r in times} == {1}
    assert max(n for n in (await stored_rows(database_url)).values()) == 1


async def test_graceful_shutdown_hands_shards_over_without_waiting_for_the_ttl(
    start_sim: StartSim, database_url: str, tmp_path: Path, fleet9: SimulatorConfig
) -> None:
    h = await start_sim(fleet9)
    replicas = [Replica(_settings(tmp_path, database_url, h.sim, f"r{i}")) for i in range(2)]
    async with anyio.create_task_group() as tg:
        for r in replicas:
            tg.start_soon(r.run)

        async def split() -> bool:
            return sorted((await _owners(database_url)).values()) == [4, 5]

        await _until(split, 20)
        replicas[0].stop.set()
        stopped = time.monotonic()

        async def handed_over() -> bool:
            return await _owners(database_url) == {"r1": 9}

        await _until(handed_over, 2 * TTL)
        assert time.monotonic() - stopped < TTL  # not by expiry: it was released
        replicas[1].stop.set()
    takeovers = await _q(database_url, "SELECT sum(takeovers) AS n FROM shard_leases")
    assert takeovers[0]["n"] == 0  # released, not taken over


async def test_a_replica_that_lost_its_lease_writes_nothing(database_url: str) -> None:
    pool = await connect_pool(database_url, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        old, new = PgStore(pool, replica="r-old"), PgStore(pool, replica="r-new")
        await old.ensure_shards([("111111111111", "us-east-1")])
        got = await old.claim_leases("r-old", 30, 1, [("111111111111", "us-east-1")])
        gen = got[("111111111111", "us-east-1")]
        # r-old stalls past its TTL (SIGSTOP, a long GC pause...); r-new takes the shard over
        await pool.execute("UPDATE shard_leases SET expires_at = now() - interval '1 second'")
        assert await new.claim_leases("r-new", 30, 1, [("111111111111", "us-east-1")]) == {("111111111111", "us-east-1"): gen + 1}
        ms = metric_chunks(["CONTACTS_HANDLED"], [])[0]
        start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
        stale = CompletedSlice(
            SliceKey("default", "i-1", start, start.replace(minute=15)),
            [(ms, [(("q", "VOICE", None, None, None, None, None), [1.0])])],
            datetime.now(UTC), ("111111111111", "us-east-1", gen), CODEC,
        )
        refused = await old.write([stale], None)
        assert refused.fenced_keys == [stale.key] and refused.rows == 0
        assert await pool.fetchval("SELECT count(*) FROM collected_slices") == 0
        assert await pool.fetchval("SELECT count(*) FROM historical_metrics") == 0
        fresh = CompletedSlice(stale.key, stale.pages, stale.collected_at, ("111111111111", "us-east-1", gen + 1),
                               CODEC)
        await new.write([fresh], None)  # the owner's write goes through
        assert await pool.fetchval("SELECT count(*) FROM historical_metrics") == 1
        renewed = await old.renew_leases("r-old", 30)
        assert renewed == {}  # and the stalled replica learns it lost the shard
    finally:
        await pool.close()


async def test_one_off_runs_are_executed_by_the_shard_owners_and_readable_anywhere(
    start_sim: StartSim, database_url: str, tmp_path: Path, fleet9: SimulatorConfig
) -> None:
    import socket
    from datetime import timedelta

    import aiohttp

    from tests.helpers import expected_rows, utc_floor

    h = await start_sim(fleet9)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    replicas = []
    for i, port in enumerate(ports):
        st = _settings(tmp_path, database_url, h.sim, f"r{i}")
        st.scheduler.enabled = False
        st.api.port = port
        replicas.append(st)
    stops = [anyio.Event() for _ in replicas]
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    start = end - timedelta(hours=1)
    async with anyio.create_task_group() as tg:
        for st, stop in zip(replicas, stops, strict=True):
            tg.start_soon(functools.partial(serve, st, stop=stop, handle_signals=False))

        async def split() -> bool:
            return sorted((await _owners(database_url)).values()) == [4, 5]

        await _until(split, 20)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{ports[0]}/collections",
                                 json={"start": start.isoformat(), "end": end.isoformat()}) as r:
                assert r.status == 202
                run_id = (await r.json())["id"]

            async def finished() -> bool:
                async with http.get(f"http://127.0.0.1:{ports[1]}/collections/{run_id}") as r:
                    return (await r.json())["status"] not in ("queued", "running")

            await _until(finished, 60)
            async with http.get(f"http://127.0.0.1:{ports[1]}/collections/{run_id}") as r:
                run = await r.json()
            async with http.get(f"http://127.0.0.1:{ports[0]}/cluster") as r:
                cluster = await r.json()
        for stop in stops:
            stop.set()
    assert run["status"] == "succeeded" and run["slices_done"] == 9 * 4, run
    assert sorted(len(rep["shards"]) for rep in cluster["replicas"]) == [4, 5]
    parts = await _q(database_url, "SELECT p.claimed_by, l.owner, p.status FROM run_parts p"
                                   " JOIN shard_leases l USING (account, region)")
    assert len(parts) == 9 and {p["status"] for p in parts} == {"done"}
    assert {p["claimed_by"] for p in parts} == {"r0", "r1"}  # both replicas did their share
    want = expected_rows(h.sim, replicas[0].collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want
