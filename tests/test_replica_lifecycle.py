"""Issue 11 items 5, 6, 9 (cancel half) and 13 (counters), with real `collector serve`
processes against the simulator and a real Postgres: whose runs a start takes over, what a
SIGTERM or kill -9 does to a one-off run, handing a shard back mid-round, and a part
taken over from a dead replica."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from collector.config import load_settings
from collector.simulator import FleetSpec, SimulatorConfig
from tests.cli_run import run_cli
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, query, stored_rows, utc_floor, wait_until

TTL = 2.0
COLLECTION = ('granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED"]\n'
              "service_levels = []")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One `collector serve` process, its output in a file (no pipe to fill up)."""

    def __init__(self, cfg: Path, name: str, port: int, cluster: bool = True) -> None:
        self.name, self.port = name, port
        self.log = cfg.parent / f"{name}-{port}.log"
        env = {**os.environ, "COLLECTOR_LOG_LEVEL": "info", "COLLECTOR_API__PORT": str(port)}
        if cluster:
            env["COLLECTOR_CLUSTER__REPLICA_ID"] = name
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--config", str(cfg)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    async def ready(self) -> None:
        async def up() -> bool:
            assert self.proc.poll() is None, self.output()
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up, 30)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return int(await anyio.to_thread.run_sync(lambda: self.proc.wait(40)))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def _config(tmp_path: Path, database_url: str, sim: Any, *, cluster: bool = True, scheduler: str = "",
            extra: str = "") -> Path:
    body = (f"\n[scheduler]\nenabled = {'true' if scheduler else 'false'}\nrevisits = []\n{scheduler}"
            "\n[aws]\nworkers_per_account = 1\n"
            f"\n[cluster]\nenabled = {'true' if cluster else 'false'}\nlease_ttl = {TTL}\n" + extra)
    return write_config(tmp_path / "c.toml", database_url, sim, collection=COLLECTION, extra=body)


def _range(hours: float) -> tuple[datetime, datetime]:
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    return end - timedelta(hours=hours), end


async def _post(replica: Replica, start: datetime, end: datetime) -> int:
    async with aiohttp.ClientSession() as http, http.post(
        f"{replica.url}/collections", json={"start": start.isoformat(), "end": end.isoformat()}
    ) as r:
        assert r.status == 202, await r.text()
        return int((await r.json())["id"])


async def _one(database_url: str, sql: str) -> Any:
    rows = await query(database_url, sql)
    return rows[0][0] if rows else None


async def _run(database_url: str, run_id: int) -> dict[str, Any]:
    rows = await query(database_url, f"SELECT * FROM collection_runs WHERE id = {run_id}")
    return dict(rows[0])


async def _settled(database_url: str, run_id: int, limit: float = 90) -> dict[str, Any]:
    async def done() -> bool:
        return (await _run(database_url, run_id))["status"] not in ("queued", "running")

    await wait_until(done, limit)
    return await _run(database_url, run_id)


async def _fenced(replica: Replica) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{replica.url}/metrics") as r:
        text = await r.text()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "collector_fenced_batches_total")


async def _insert_run(database_url: str, owner: str | None, start: datetime, end: datetime) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(
            "INSERT INTO collection_runs (requested_by, profile, range_start, range_end, status, owner)"
            " VALUES ('api', 'default', $1, $2, 'running', $3) RETURNING id", start, end, owner))
    finally:
        await conn.close()


async def _migrate(cfg: Path) -> None:
    from collector.wiring import runtime

    async with runtime(load_settings(cfg)):
        pass


# -- item 5 ------------------------------------------------------------------------------------


async def _beat(database_url: str, replica: str, until: anyio.Event) -> None:
    """Stand in for a live replica with the same config (it can serve every shard there
    is): heartbeat every third of the TTL until told to stop."""
    conn = await asyncpg.connect(database_url)
    try:
        while not until.is_set():
            await conn.execute("INSERT INTO replicas (id, serves) VALUES ($1, '{}') ON CONFLICT (id)"
                               " DO UPDATE SET heartbeat_at = now(),"
                               " serves = (SELECT coalesce(array_agg(account || '/' || region), '{}')"
                               "           FROM shard_leases)", replica)
            with anyio.move_on_after(TTL / 3):
                await until.wait()
    finally:
        await conn.close()


async def test_a_starting_replica_takes_over_only_its_own_and_dead_replicas_runs(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=4, queues_per_instance=2), latency=0.15))
    cfg = _config(tmp_path, database_url, h.sim)
    await _migrate(cfg)
    start, end = _range(6)
    ghost = await _insert_run(database_url, "ghost", start, end)  # a replica that died
    mine = await _insert_run(database_url, "p1", start, end)  # p1's, alive until its restart below
    p1_alive = anyio.Event()
    p0 = Replica(cfg, "p0", _free_port())
    p1: Replica | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_beat, database_url, "p1", p1_alive)
            await p0.ready()

            async def owns_its_share() -> bool:  # p1 counts as live: half of the shards each
                return bool(await _one(database_url, "SELECT count(*) FROM shard_leases WHERE owner = 'p0'") == 2)

            await wait_until(owns_its_share, 20)
            live = await _post(p0, start, end)

            async def working() -> bool:
                return bool(await _one(database_url, f"SELECT slices_done FROM collection_runs WHERE id = {live}"))

            await wait_until(working, 30)
            # A second serve on p0's busy port: one line naming the port and the fix, exit 3,
            # and nothing in the database changed.
            before = await query(database_url, "SELECT * FROM collection_runs ORDER BY id")
            busy = await run_cli("serve", "--config", str(cfg), "--port", str(p0.port),
                                 env={**os.environ, "COLLECTOR_CLUSTER__REPLICA_ID": "p9"})
            assert busy.returncode == 3, busy
            lines = busy.stderr.strip().splitlines()
            assert len(lines) == 1 and f"127.0.0.1:{p0.port}" in lines[0] and "--port" in lines[0], busy.stderr
            after = await query(database_url, "SELECT * FROM collection_runs ORDER BY id")
            assert [(r["id"], r["status"], r["owner"], r["adopted_at"]) for r in after] == [
                (r["id"], r["status"], r["owner"], r["adopted_at"]) for r in before]
            assert await _one(database_url, "SELECT count(*) FROM replicas WHERE id = 'p9'") == 0
            # p1 restarts under the same id while p0's run is in flight; its predecessor
            # counts as alive until then, so only p1 itself may take its run over.
            p1 = Replica(cfg, "p1", _free_port())
            await p1.ready()
            p1_alive.set()
        assert p1 is not None

        async def adopted() -> bool:
            return bool(await _one(database_url, "SELECT count(*) FROM collection_runs"
                                                 f" WHERE resumed_from IN ({ghost}, {mine})") == 2)

        await wait_until(adopted, 20)
        run = await _settled(database_url, live)
        resumed = await query(database_url, "SELECT id, resumed_from FROM collection_runs WHERE requested_by = 'resume'")
        for r in resumed:
            await _settled(database_url, r["id"])
        rows = await query(database_url, "SELECT id, status FROM collection_runs ORDER BY id")
        assert await p0.stop() == 0 and await p1.stop() == 0
    finally:
        p0.kill()
        if p1 is not None:
            p1.kill()
    # p0's run was left alone (its parts ran on the shards' holders): never interrupted nor
    # resumed elsewhere. The dead replica's run went to p0 at its start, p1's own to p1.
    assert run["status"] == "succeeded" and run["adopted_at"] is None, run
    assert sorted(r["resumed_from"] for r in resumed) == [ghost, mine]
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses[ghost] == statuses[mine] == "interrupted"
    assert {statuses[r["id"]] for r in resumed} == {"succeeded"}

    def taken(replica: Replica) -> list[int]:
        return [orjson.loads(line)["run_id"] for line in replica.output().splitlines()
                if "run_interrupted_by_restart" in line]

    assert p1 is not None and taken(p0) == [ghost] and taken(p1) == [mine]
    want = expected_rows(h.sim, load_settings(cfg).collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want


async def test_a_start_on_a_busy_port_changes_nothing_in_the_database(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    """Service.run itself binds before it touches a run (not only the CLI's pre-check)."""
    from collector import errors
    from collector.wiring import serve

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=1), throttle=False))
    cfg = _config(tmp_path, database_url, h.sim, cluster=False)
    await _migrate(cfg)
    start, end = _range(1)
    orphan = await _insert_run(database_url, None, start, end)  # a start would take this one over
    settings = load_settings(cfg)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        settings.api.port = holder.getsockname()[1]
        try:
            await serve(settings, handle_signals=False)
        except errors.PortInUse as e:
            assert f"127.0.0.1:{settings.api.port}" in str(e) and "--port" in str(e)
        else:
            raise AssertionError("serve started on a busy port")
    run = await _run(database_url, orphan)
    assert (run["status"], run["adopted_at"]) == ("running", None)
    assert await _one(database_url, "SELECT count(*) FROM collection_runs") == 1
    assert await _one(database_url, "SELECT count(*) FROM replicas") == 0


# -- item 6 ------------------------------------------------------------------------------------


async def test_sigterm_of_a_cluster_replica_puts_its_part_back_for_another(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=2), latency=0.15))
    cfg = _config(tmp_path, database_url, h.sim)
    p0 = Replica(cfg, "p0", _free_port())
    p1: Replica | None = None
    try:
        await p0.ready()

        async def owns_all() -> bool:
            return bool(await _one(database_url, "SELECT count(*) FROM shard_leases WHERE owner = 'p0'") == 2)

        await wait_until(owns_all, 20)
        start, end = _range(8)
        run_id = await _post(p0, start, end)

        async def mid_part() -> bool:
            return bool(await _one(database_url, "SELECT count(*) FROM run_parts WHERE claimed_by = 'p0'"
                                                 " AND status = 'running' AND slices_done > 0"))

        await wait_until(mid_part, 30)
        p1 = Replica(cfg, "p1", _free_port())
        await p1.ready()
        assert await p0.stop() == 0  # SIGTERM mid-part
        parts = await query(database_url, f"SELECT status, claimed_by FROM run_parts WHERE run_id = {run_id}")
        # Back in the queue at once, not failed, and nothing left running on the stopped replica.
        assert {p["status"] for p in parts} <= {"queued", "running", "done"}, parts
        assert not [p for p in parts if p["claimed_by"] == "p0" and p["status"] == "running"]
        run = await _settled(database_url, run_id)
        assert await p1.stop() == 0
    finally:
        p0.kill()
        if p1 is not None:
            p1.kill()
    assert "part_requeued" in p0.output()
    assert run["status"] == "succeeded" and run["errors"] == "[]", run
    assert run["slices_total"] == run["slices_done"] == 2 * 8 * 4 and run["slices_failed"] == 0, run
    want = expected_rows(h.sim, load_settings(cfg).collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want


async def test_sigterm_of_a_single_node_resumes_the_one_off_run_on_the_next_start(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=2), latency=0.15))
    cfg = _config(tmp_path, database_url, h.sim, cluster=False)
    port = _free_port()
    p = Replica(cfg, "single", port, cluster=False)
    try:
        await p.ready()
        start, end = _range(8)
        run_id = await _post(p, start, end)

        async def working() -> bool:
            return bool(await _one(database_url, f"SELECT slices_done FROM collection_runs WHERE id = {run_id}"))

        await wait_until(working, 30)
        assert await p.stop() == 0
        assert (await _run(database_url, run_id))["status"] == "interrupted"
        p = Replica(cfg, "single", port, cluster=False)  # the next start (a new process id)

        async def resumed() -> bool:
            return bool(await _one(database_url, f"SELECT count(*) FROM collection_runs WHERE resumed_from = {run_id}") == 1)

        await wait_until(resumed, 30)
        new_id = await _one(database_url, f"SELECT id FROM collection_runs WHERE resumed_from = {run_id}")
        new = await _settled(database_url, new_id)
        assert await p.stop() == 0
    finally:
        p.kill()
    assert new["status"] == "succeeded" and new["slices_done"] == new["slices_total"] == 8 * 4, new
    want = expected_rows(h.sim, load_settings(cfg).collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want


# -- item 13: counters of a part taken over are not doubled --------------------------------------


async def test_a_part_taken_over_after_kill_9_is_counted_once(start_sim: StartSim, database_url: str, tmp_path: Path) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=2), latency=0.15))
    cfg = _config(tmp_path, database_url, h.sim)
    p0, p1 = Replica(cfg, "p0", _free_port()), Replica(cfg, "p1", _free_port())
    try:
        await p0.ready()
        await p1.ready()

        async def split() -> bool:
            return bool(await _one(database_url, "SELECT count(DISTINCT owner) FROM shard_leases"
                                                 " WHERE expires_at > now()") == 2)

        await wait_until(split, 20)
        start, end = _range(8)
        run_id = await _post(p0, start, end)

        async def mid_part() -> bool:
            return bool(await _one(database_url, "SELECT count(*) FROM run_parts WHERE claimed_by = 'p0'"
                                                 " AND status = 'running' AND slices_done > 0"))

        await wait_until(mid_part, 30)
        p0.kill()  # kill -9 mid-part: p1 takes the shard and the part over once p0 counts as dead
        run = await _settled(database_url, run_id)
        assert await p1.stop() == 0
    finally:
        p0.kill()
        p1.kill()
    assert run["status"] == "succeeded", run
    assert run["slices_total"] == run["slices_done"] == 2 * 8 * 4, run  # not 1.x times that
    want = expected_rows(h.sim, load_settings(cfg).collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want


# -- item 9: a shard handed back is cancelled first --------------------------------------------


async def test_a_replica_joining_mid_round_gets_shards_without_any_fenced_slice(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=4, queues_per_instance=2), latency=0.3))
    cfg = _config(tmp_path, database_url, h.sim, scheduler='initial_backfill = "8h"\ncatchup_batch = 100\n')
    p0 = Replica(cfg, "p0", _free_port())
    p1: Replica | None = None
    try:
        await p0.ready()

        async def collecting() -> bool:
            return bool(await _one(database_url, "SELECT count(*) FROM collected_slices"))

        await wait_until(collecting, 30)
        p1 = Replica(cfg, "p1", _free_port())  # joins mid-round: p0 hands two shards back

        async def split() -> bool:
            rows = await query(database_url, "SELECT owner, count(*) AS n FROM shard_leases"
                                             " WHERE expires_at > now() GROUP BY owner")
            return sorted(r["n"] for r in rows if r["owner"]) == [2, 2]

        await wait_until(split, 30)

        async def all_collected() -> bool:
            # the 8 h backfill is 32 slices per instance; a slice that settles while the test
            # runs makes it 33, so the check is "every instance has every slice", not "== 128"
            rows = await query(database_url, "SELECT count(*) AS n, count(DISTINCT slice_start) AS d"
                                             " FROM collected_slices")
            return bool(rows[0]["d"] >= 32 and rows[0]["n"] == 4 * rows[0]["d"])

        await wait_until(all_collected, 90)
        fenced = [await _fenced(p0), await _fenced(p1)]
        assert await p0.stop() == 0 and await p1.stop() == 0
    finally:
        p0.kill()
        if p1 is not None:
            p1.kill()
    out = p0.output()
    assert fenced == [0, 0] and "slices_fenced" not in out
    errors = await query(database_url, "SELECT errors::text AS e FROM collection_runs")
    assert not [r for r in errors if "moved on" in r["e"]]
    assert "rebalance" in out and "slices_handed_over" in out  # the handover was mid-round
    first = await _one(database_url, "SELECT min(slice_start) FROM collected_slices")
    last = await _one(database_url, "SELECT max(slice_start) FROM collected_slices")
    want = expected_rows(h.sim, load_settings(cfg).collection, first, last + timedelta(minutes=15),
                         datetime.now(UTC))
    assert await stored_rows(database_url) == want
