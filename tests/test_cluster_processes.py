"""Scale-out with real processes: kill -9 and SIGSTOP/SIGCONT of a replica."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import StartSim, write_config
from tests.helpers import lease_owners, query, stored_rows, wait_until

TTL = 3.0


_q = query
_owners = lease_owners
_until = wait_until


def _start(cfg: Path, replica: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COLLECTOR_LOG_LEVEL": "info", "COLLECTOR_CLUSTER__REPLICA_ID": replica}
    return subprocess.Popen([sys.executable, "-m", "collector", "serve", "--config", str(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def test_kill_9_and_sigstop_of_replicas_lose_nothing_and_write_nothing_stale(
    start_sim: StartSim, database_url: str, tmp_path: Path
) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=9, queues_per_instance=3), latency=0.05))
    cfg = write_config(
        tmp_path / "c.toml", database_url, h.sim,
        collection='granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = ["CONTACTS_HANDLED"]\nservice_levels = []',
        extra=(f'\n[scheduler]\ninitial_backfill = "12h"\nrevisits = []\n\n[aws]\nworkers_per_account = 1\n'
               f'\n[api]\nport = 0\n\n[cluster]\nenabled = true\nlease_ttl = {TTL}\n'),
    )
    procs = {f"p{i}": _start(cfg, f"p{i}") for i in range(3)}
    try:
        async def balanced() -> bool:
            return sorted((await _owners(database_url)).values()) == [3, 3, 3]

        await _until(balanced, 30)
        procs["p0"].send_signal(signal.SIGSTOP)  # frozen past its TTL
        frozen = time.monotonic()

        async def p0_taken_over() -> bool:
            o = await _owners(database_url)
            return "p0" not in o and sum(o.values()) == 9

        await _until(p0_taken_over, 4 * TTL)
        assert time.monotonic() - frozen <= 2 * TTL + 1.5
        procs["p1"].kill()  # and another one dies outright

        async def p1_taken_over() -> bool:
            o = await _owners(database_url)
            return "p1" not in o and sum(o.values()) == 9

        await _until(p1_taken_over, 4 * TTL)
        procs["p0"].send_signal(signal.SIGCONT)  # resumes, believing it still owns its shards

        async def all_collected() -> bool:
            rows = await _q(database_url, "SELECT count(*) AS n FROM collected_slices")
            return bool(rows) and rows[0]["n"] >= 9 * 48

        await _until(all_collected, 120)

        async def rebalanced() -> bool:  # p0 came back as a live replica and got a share
            return sorted((await _owners(database_url)).values()) == [4, 5]

        await _until(rebalanced, 6 * TTL)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        outs = {name: p.communicate(timeout=30)[0].decode() for name, p in procs.items()}
    assert procs["p2"].returncode == 0 and procs["p0"].returncode == 0
    assert "lease_lost" in outs["p0"]  # it learned it had lost its shards...
    times = await _q(database_url, "SELECT times_collected AS n FROM collected_slices")
    assert len(times) == 9 * 48 and {r["n"] for r in times} == {1}  # ...and wrote nothing stale twice
    assert max((await stored_rows(database_url)).values()) == 1
    assert h.sim.stats.by_status.get(400, 0) == 0
