"""`make soak` (python -m bench.soak): the service left running through faults, bounded to a
few minutes, then checked for exactness. Not part of `make test`.

Soak: two `collector serve` replicas (cluster mode, short lease TTL) run the scheduler over a
23-hour backfill of a simulated fleet that answers 5% of requests with a 5xx, against a
private Postgres cluster this script owns. While they work, Postgres is restarted, one
replica is SIGSTOPped past its lease (then SIGCONTed), and the other is killed -9 (and
started again). Afterwards every settled slice must be stored exactly once and exactly as
the simulator holds it, and no replica may have exited on its own.

One-off wall (issue 11 item 13): three replicas share six accounts; one POST /collections;
the run's wall time against the quota floor (the busiest account's GetMetricData calls at
5 requests/s). Target: wall <= floor / 0.8.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg

from collector.config import load_settings
from collector.simulator import FleetSpec, Simulator, SimulatorConfig, running_simulator
from tests.conftest import write_config
from tests.helpers import expected_rows, stored_rows

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
TTL = 3.0
G = 900
RATE = 5.0
BURST = 8


class Aborted(Exception):
    """A replica exited on its own: the soak stops there."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A Postgres cluster of this script's own (initdb/pg_ctl), so it can be restarted."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.port = root, root / "data", _free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            shutil.chown(root, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [str(PG_BIN / tool), *args]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                 " -c max_connections=200", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


class Replica:
    def __init__(self, cfg: Path, name: str, env: dict[str, str]) -> None:
        self.cfg, self.name, self.port, self.env = cfg, name, _free_port(), env
        self.log = cfg.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        env = {**self.env, "COLLECTOR_CLUSTER__REPLICA_ID": self.name, "COLLECTOR_API__PORT": str(self.port),
               "COLLECTOR_LOG_LEVEL": "info"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--config", str(self.cfg)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    async def fenced(self) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            text = await r.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("collector_fenced_batches_total"))


async def _q(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def _until(what: Callable[[], Awaitable[bool]], limit: float, check: Callable[[], None]) -> None:
    with anyio.fail_after(limit):
        while not await what():
            check()
            await anyio.sleep(0.25)


def _env(sim_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "AWS_"))}
    env.update({"AWS_ENDPOINT_URL_CONNECT": sim_url, "AWS_ACCESS_KEY_ID": "SIM100000000000",
                "AWS_SECRET_ACCESS_KEY": "simulator", "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"})
    return env


async def _fresh_db(server: str, name: str) -> str:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


async def soak(pg: PrivatePostgres, work: Path) -> dict[str, Any]:
    sim = Simulator(SimulatorConfig(fleet=FleetSpec(accounts=4, queues_per_instance=3), error_rate=0.05,
                                    latency=0.05))
    dsn = await _fresh_db(pg.dsn, "soak")
    fig: dict[str, Any] = {}
    async with running_simulator(sim) as url:
        cfg = write_config(
            work / "soak.toml", dsn, sim,
            collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\nservice_levels = [20, 60]',
            extra=('\n[scheduler]\ninitial_backfill = "23h"\nrevisits = []\ncatchup_batch = 12\n'
                   f'\n[aws]\nworkers_per_account = 2\n\n[cluster]\nenabled = true\nlease_ttl = {TTL}\n'),
        )
        reps = {n: Replica(cfg, n, _env(url)) for n in ("r0", "r1")}
        exited: list[str] = []
        expected_dead: set[str] = set()

        def check() -> None:
            for n, r in reps.items():
                if n not in expected_dead and not r.alive() and n not in exited:
                    exited.append(n)
            if exited:
                raise Aborted(f"replica {exited[0]} exited on its own")

        async def collected(n: int) -> bool:
            rows = await _q(dsn, "SELECT count(*) AS n FROM collected_slices")
            return bool(rows) and rows[0]["n"] >= n

        total = len(sim.fleet.instances) * 92
        t0 = time.monotonic()
        try:
            await _until(lambda: collected(total // 6), 120, check)
            fig["db_restart_at_s"] = round(time.monotonic() - t0, 1)
            pg.stop()  # a restart: every connection is dropped
            pg.start()
            await _until(lambda: collected(total // 3), 180, check)
            fig["sigstop_at_s"] = round(time.monotonic() - t0, 1)
            reps["r0"].signal(signal.SIGSTOP)
            await anyio.sleep(2.5 * TTL)  # frozen past its lease
            reps["r0"].signal(signal.SIGCONT)
            await _until(lambda: collected(total // 2), 180, check)
            fig["kill_9_at_s"] = round(time.monotonic() - t0, 1)
            expected_dead.add("r1")
            reps["r1"].signal(signal.SIGKILL)
            assert reps["r1"].proc is not None
            reps["r1"].proc.wait(10)
            await anyio.sleep(2.0)
            reps["r1"].start()
            expected_dead.discard("r1")

            async def complete() -> bool:
                now = datetime.now(UTC)
                n = int((now - timedelta(minutes=15)).timestamp())
                newest_end = datetime.fromtimestamp(n - n % G, UTC)
                rows = await _q(dsn, "SELECT i.instance_id, min(c.slice_start) AS a, count(*) AS n"
                                     " FROM collected_slices c JOIN instances i ON i.ref = c.instance_ref"
                                     " GROUP BY i.instance_id")
                if len(rows) < len(sim.fleet.instances):
                    return False
                return all(r["n"] == int((newest_end - r["a"]).total_seconds()) // G for r in rows)

            await _until(complete, 300, check)
            fig["wall_s"] = round(time.monotonic() - t0, 1)
            fig["fenced_batches"] = [await r.fenced() for r in reps.values()]
        except Aborted as e:
            fig["aborted"] = f"{e} at {round(time.monotonic() - t0, 1)} s"
        finally:
            codes = {n: r.stop() for n, r in reps.items()}
        first = (await _q(dsn, "SELECT min(slice_start) AS a FROM collected_slices"))[0]["a"]
        last = (await _q(dsn, "SELECT max(slice_start) AS a FROM collected_slices"))[0]["a"]
        settings = load_settings(cfg)
        want = expected_rows(sim, settings.collection, first, last + timedelta(seconds=G), datetime.now(UTC))
        got = await stored_rows(dsn)
        slices = (await _q(dsn, "SELECT count(*) AS n, sum(times_collected) AS t FROM collected_slices"))[0]
        runs = await _q(dsn, "SELECT status, count(*) AS n FROM collection_runs GROUP BY status ORDER BY status")
        leases = (await _q(dsn, "SELECT sum(takeovers) AS t FROM shard_leases"))[0]
        fig.update({
            "slices_settled": slices["n"], "slices_collections": slices["t"],
            "rows_expected": sum(want.values()), "rows_stored": sum(got.values()),
            "rows_exact": got == want, "rows_stored_twice": sum(1 for v in got.values() if v > 1),
            "sim_5xx": sum(v for k, v in sim.stats.by_status.items() if k >= 500),
            "sim_requests": sum(sim.stats.by_status.values()),
            "sim_400": sim.stats.by_status.get(400, 0),
            "lease_takeovers": leases["t"], "runs": {r["status"]: r["n"] for r in runs},
            "exited_on_their_own": exited, "exit_codes_after_sigterm": codes,
        })
    return fig


async def oneoff_wall(pg: PrivatePostgres, work: Path, accounts: int = 6, replicas: int = 3) -> dict[str, Any]:
    sim = Simulator(SimulatorConfig(fleet=FleetSpec(accounts=accounts, queues_per_instance=5), rate=RATE, burst=BURST))
    dsn = await _fresh_db(pg.dsn, "oneoff")
    async with running_simulator(sim) as url:
        cfg = write_config(
            work / "oneoff.toml", dsn, sim,
            extra=f"\n[scheduler]\nenabled = false\n\n[cluster]\nenabled = true\nlease_ttl = {TTL}\n",
        )
        reps = [Replica(cfg, f"w{i}", _env(url)) for i in range(replicas)]
        try:
            async def split() -> bool:
                rows = await _q(dsn, "SELECT owner, count(*) AS n FROM shard_leases"
                                     " WHERE expires_at > now() AND owner IS NOT NULL GROUP BY owner")
                return len(rows) == replicas and sum(r["n"] for r in rows) == accounts

            await _until(split, 60, lambda: None)
            n = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp())
            end = datetime.fromtimestamp(n - n % G, UTC)
            start = end - timedelta(hours=23)
            async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{reps[0].port}/collections",
                json={"start": start.isoformat(), "end": end.isoformat()},
            ) as r:
                run_id = (await r.json())["id"]

            async def settled() -> bool:
                rows = await _q(dsn, "SELECT status FROM collection_runs WHERE id = $1", run_id)
                return bool(rows) and rows[0]["status"] not in ("queued", "running")

            await _until(settled, 600, lambda: None)
        finally:
            for rep in reps:
                rep.stop()
        run = (await _q(dsn, "SELECT * FROM collection_runs WHERE id = $1", run_id))[0]
    wall = (run["finished_at"] - run["created_at"]).total_seconds()
    busiest = max(sim.stats.calls_by_account.values())
    floor = busiest / RATE
    floor_burst = (busiest - BURST) / RATE  # the simulator's bucket starts full
    return {"status": run["status"], "slices": f'{run["slices_done"]}/{run["slices_total"]}',
            "busiest_account_calls": busiest, "floor_s": round(floor, 1), "wall_s": round(wall, 1),
            "wall_over_floor": round(wall / floor, 3),
            "wall_over_floor_less_burst": round(wall / floor_burst, 3), "target": "<= 1.25"}


async def _main() -> int:
    work = Path(tempfile.mkdtemp(prefix="collector-soak-"))
    os.chmod(work, 0o777)
    pg = PrivatePostgres(work / "pg")
    pg.start()
    try:
        s = await soak(pg, work)
        print("soak:")
        for k, v in s.items():
            print(f"  {k:28} {v}")
        w = await oneoff_wall(pg, work)
        print("one-off wall, 3 replicas x 6 accounts (issue 11 item 13):")
        for k, v in w.items():
            print(f"  {k:28} {v}")
    finally:
        pg.stop()
    ok = (s["rows_exact"] and not s["exited_on_their_own"] and "aborted" not in s and not s["rows_stored_twice"]
          and set(s["exit_codes_after_sigterm"].values()) == {0} and s["sim_400"] == 0)
    print(f"soak {'PASSED' if ok else 'FAILED'}; logs in {work}")
    return 0 if ok else 1


def main() -> int:
    return anyio.run(_main)


if __name__ == "__main__":
    sys.exit(main())
