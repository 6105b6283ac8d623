"""The fleet row of `make bench` (alone: ``python -m bench.fleet``).

A fleet of accounts, each a role to assume (moto's STS, in the simulator's process so the
simulator knows which account an assumed key belongs to), its instances discovered with
ListInstances and their queues with ListQueues, every metric over the last hour, each
account on its own GetMetricData quota. A one-off ``collector collect`` runs in its own
process; its peak RSS, stored values per CPU-second and wall time against the quota's floor
are printed beside the same for 2 accounts, each against its target.

Size: BENCH_FLEET_ACCOUNTS (100), BENCH_FLEET_INSTANCES (5), BENCH_FLEET_QUEUES (10),
BENCH_FLEET_HOURS (1).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import SimProcess, _env, _fresh_db, _run, _server_url, _values, free_port, line

ACCOUNTS = int(os.environ.get("BENCH_FLEET_ACCOUNTS", "100"))
INSTANCES = int(os.environ.get("BENCH_FLEET_INSTANCES", "5"))
QUEUES = int(os.environ.get("BENCH_FLEET_QUEUES", "10"))
HOURS = float(os.environ.get("BENCH_FLEET_HOURS", "1"))
SMALL = 2  # the accounts of the side-by-side run
RATE, BURST = 5.0, 8

SIM = """
import sys, anyio
from moto.server import ThreadedMotoServer
from collector.simulator import FleetSpec, Simulator, SimulatorConfig, running_simulator

def account_of(access_key_id):
    from moto.sts.models import sts_backends
    for by_partition in sts_backends.values():
        for backend in by_partition.values():
            for role in backend.assumed_roles:
                if role.access_key_id == access_key_id:
                    return str(role.account_id)
    return None

async def main() -> None:
    port, sts_port, accounts, instances, queues, rate, burst = sys.argv[1:8]
    sts = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sts_port), verbose=False)
    sts.start()
    sim = Simulator(SimulatorConfig(
        fleet=FleetSpec(accounts=int(accounts), instances_per_account=int(instances),
                        queues_per_instance=int(queues)),
        rate=float(rate), burst=int(burst)))
    sim.key_resolver = account_of
    async with running_simulator(sim, "127.0.0.1", int(port)) as url:
        print(f"simulator listening on {url}", " ".join(sorted(sim.fleet.accounts)), flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""

CONFIG = """[database]
dsn = "{dsn}"

[collection]
granularity = "15m"
groupings = ["QUEUE", "CHANNEL"]
metrics = "all"
service_levels = [20, 60]

"""


class FleetSimulator(SimProcess):
    """The simulator and moto's STS, in one process of their own."""

    def __init__(self, accounts: int, port: int | None = None) -> None:
        port = port or free_port()
        sts_port = free_port()
        self.sts_url = f"http://127.0.0.1:{sts_port}"
        super().__init__(
            [sys.executable, "-c", SIM, str(port), str(sts_port), str(accounts), str(INSTANCES), str(QUEUES),
             str(RATE), str(BURST)], port)
        self.accounts = self.first_line.split()[4:]


def _accounts(accounts: list[str]) -> str:
    return "".join(
        f'[[accounts]]\nrole_arn = "arn:aws:iam::{a}:role/ConnectCollector"\nexternal_id = "bench"\n'
        'regions = ["us-east-1"]\ninstances = "discover"\n\n'
        for a in accounts
    )


def collect_fleet(workdir: Path, server: str, accounts: int, port: int | None = None) -> dict[str, Any]:
    sim = FleetSimulator(accounts, port)
    try:
        dsn = asyncio.run(_fresh_db(server))
        cfg = workdir / f"collector-fleet-{accounts}.toml"
        cfg.write_text(CONFIG.format(dsn=dsn) + _accounts(sim.accounts))
        n = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp())
        end = datetime.fromtimestamp(n - n % 900, UTC)
        start = end - timedelta(hours=HOURS)
        env = _env(sim.url)
        env.update({"AWS_ENDPOINT_URL_STS": sim.sts_url, "AWS_DEFAULT_REGION": "us-east-1"})
        res = _run([sys.executable, "-m", "collector", "collect", "--config", str(cfg), "--no-progress",
                    "--start", start.isoformat(), "--end", end.isoformat()], env)
        st = sim.stats()
    finally:
        sim.close()
    windows = st["windows"]
    first = min(w[0] for w in windows.values())
    last = max(w[1] for w in windows.values())
    floor = max((w[2] - BURST) / RATE for w in windows.values())
    values = asyncio.run(_values(dsn))
    return {
        "accounts": accounts, "wall": res.wall, "cpu": res.cpu, "rss": res.max_rss_mb, "values": values,
        "vps": values / res.cpu, "floor": floor, "api_window": last - first,
        "calls_per_account": sum(w[2] for w in windows.values()) / len(windows),
        "accounts_served": len(windows),
        "starts": sorted(w[0] - first for w in windows.values()),
        "own_windows": sorted(w[1] - w[0] for w in windows.values()),
    }


def report(small: dict[str, Any], big: dict[str, Any], line: Any) -> None:
    """The fleet rows, in the bench's table: the fleet beside 2 accounts."""
    size, pair = f"{big['accounts']}x{INSTANCES}", f"{small['accounts']}x{INSTANCES}"
    line(f"fleet {size}: accounts served", f"{big['accounts_served']} / {big['accounts']}", "all",
         big["accounts_served"] == big["accounts"])
    line(f"fleet {size}: peak RSS", f"{big['rss']:.0f} MB", "< 300 MB", big["rss"] < 300)
    line(f"  {pair}", f"{small['rss']:.0f} MB", "", True)
    line(f"fleet {size}: stored values per CPU-second", f"{big['vps']:,.0f}", ">= 150,000", big["vps"] >= 150_000)
    line("  values stored / collector CPU seconds", f"{big['values']:,} / {big['cpu']:.1f}", "", True)
    line(f"  {pair}", f"{small['values']:,} / {small['cpu']:.1f} = {small['vps']:,.0f}", "", True)
    ratio = big["vps"] / small["vps"]
    line(f"  values per CPU-second, {size} / {pair}", f"{ratio:.2f}", ">= 1.00", ratio >= 1.0)
    eff = big["floor"] / big["wall"]
    line(f"fleet {size}: quota floor / wall", f"{big['floor']:.1f} / {big['wall']:.1f} s = {eff:.2f}",
         ">= 0.90", eff >= 0.9)
    eff_small = small["floor"] / small["wall"]
    line(f"  {pair}", f"{small['floor']:.1f} / {small['wall']:.1f} s = {eff_small:.2f}", "", True)
    line("  GetMetricData calls per account", f"{big['calls_per_account']:.0f}", "", True)
    s, w = big["starts"], big["own_windows"]
    line("  API window, first to last call", f"{big['api_window']:.1f} s", "", True)
    line("  accounts' first calls after the first", f"median {s[len(s) // 2]:.1f}, max {s[-1]:.1f} s", "", True)
    line("  an account's own window", f"median {w[len(w) // 2]:.1f}, max {w[-1]:.1f} s", "", True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-fleet-"))
    print(f"connect-collector bench, fleet: {ACCOUNTS} accounts (each a role assumed through STS) x {INSTANCES} "
          f"instances (discovered) x {QUEUES} queues, every metric, {HOURS:g} h, quota {RATE:g} req/s burst "
          f"{BURST} per account; beside {SMALL} accounts", flush=True)
    server = _server_url()
    small = collect_fleet(workdir, server, SMALL)
    big = collect_fleet(workdir, server, ACCOUNTS)
    print("figure                                                        value   target")
    report(small, big, line)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)) if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4096 else None
    raise SystemExit(main())
