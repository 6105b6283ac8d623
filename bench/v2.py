"""The GetMetricDataV2 row of `make bench` (alone: ``python -m bench.v2``).

The simulator (with agents) runs in its own process, the collector's
``collect --profile`` in another, so CPU seconds are the collector's alone. Quota
efficiency compares the API window (first to last served GetMetricDataV2 call) with
the floor the V2 quota allows for the calls each account needed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import QUEUES, SimProcess, _env, _fresh_db, _run, _server_url, _values, line

# Each account's instances page their requests concurrently (a request's pages are a chain:
# each needs the previous NextToken), so the burst is usable as in v1.
ACCOUNTS = int(os.environ.get("BENCH_V2_ACCOUNTS", "4"))
INSTANCES = int(os.environ.get("BENCH_V2_INSTANCES", "3"))
AGENTS = int(os.environ.get("BENCH_AGENTS", "40"))
HOURS = float(os.environ.get("BENCH_V2_HOURS", "24"))
RATE, BURST = 10.0, 10  # the catalog's GetMetricDataV2 default, and the simulator's

PROFILE = """
[aws]
get_metric_data_v2_rate = {rate}
get_metric_data_v2_burst = {burst}

[[profiles]]
name = "agents_v2"
api = "v2"
interval = "15m"
groupings = ["AGENT", "QUEUE"]
metrics = ["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "AGENT_ANSWER_RATE", "AVG_HOLD_TIME",
           "AVG_AFTER_CONTACT_WORK_TIME", "AGENT_NON_RESPONSE", "AVG_TALK_TIME", "AVG_ACTIVE_TIME",
           "ABANDONMENT_RATE", "AVG_ABANDON_TIME", "AVG_AGENT_CONCURRENCY", "AVG_CONTACT_DURATION",
           "AVG_HOLDS", "AVG_INTERACTION_AND_HOLD_TIME", "AVG_NON_TALK_TIME", "AVG_AGENT_PAUSE_TIME"]
[profiles.filters]
queues = "all"
agents = "all"
"""

SIM = """
import anyio, sys
from collector.cli import _write_sim_config
from collector.simulator import FleetSpec, Simulator, SimulatorConfig, running_simulator

async def main() -> None:
    port, accounts, instances, queues, agents, rate, burst, cfg = sys.argv[1:9]
    sim = Simulator(SimulatorConfig(
        fleet=FleetSpec(accounts=int(accounts), instances_per_account=int(instances),
                        queues_per_instance=int(queues), agents_per_instance=int(agents)),
        metric_data_v2_rate=float(rate), metric_data_v2_burst=int(burst)))
    _write_sim_config(cfg, sim)
    async with running_simulator(sim, "127.0.0.1", int(port)) as url:
        print(f"simulator listening on {url}", flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


class SimulatorV2(SimProcess):
    """The simulator with agents, in its own process."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.cfg = workdir / f"sim-v2-{port}.toml"
        super().__init__(
            [sys.executable, "-c", SIM, str(port), str(ACCOUNTS), str(INSTANCES), str(QUEUES), str(AGENTS),
             str(RATE), str(BURST), str(self.cfg)], port)


def collect_v2(workdir: Path, server: str, port: int) -> dict[str, Any]:
    sim = SimulatorV2(workdir, port)
    try:
        n = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp())
        end = datetime.fromtimestamp(n - n % 900, UTC)
        start = end - timedelta(hours=HOURS)
        # The simulator builds a request's whole result set in Python on its first page
        # (~0.5 s CPU per window here); a first run warms its cache so the measured run
        # times the collector against the quota, not the simulator's data generation.
        for warm in (True, False):
            dsn = asyncio.run(_fresh_db(server))
            cfg = workdir / f"collector-v2-{port}.toml"
            cfg.write_text(f'[database]\ndsn = "{dsn}"\n' + PROFILE.format(rate=RATE, burst=BURST) + "\n"
                           + sim.cfg.read_text())
            sim.reset()
            res = _run([sys.executable, "-m", "collector", "collect", "--config", str(cfg), "--no-progress",
                        "--profile", "agents_v2", "--start", start.isoformat(), "--end", end.isoformat()],
                       _env(sim.url))
            if warm:
                time.sleep(1.0)  # the quota's burst refills before the measured run
        st = sim.stats()
    finally:
        sim.close()
    served = st["by_op_status"].get("GetMetricDataV2:200", 0)
    throttled = st["by_op_status"].get("GetMetricDataV2:429", 0)
    windows = st["windows_v2"]
    first = min(w[0] for w in windows.values())
    last = max(w[1] for w in windows.values())
    floor = max((w[2] - BURST) / RATE for w in windows.values())
    values = asyncio.run(_values(dsn))
    return {
        "wall": res.wall, "cpu": res.cpu, "rss": res.max_rss_mb, "values": values,
        "calls_per_account": served / len(windows), "throttled_share": throttled / max(1, served + throttled),
        "api_window": last - first, "floor": floor, "efficiency": floor / (last - first),
        "efficiency_end_to_end": floor / res.wall, "out": res.out.strip(),
        "per_account": sorted(round((w[2] - BURST) / RATE / (w[1] - w[0]), 3) for w in windows.values()),
        "starts": sorted(round(w[0] - first, 2) for w in windows.values()),
    }


def report(v2: dict[str, Any], line: Any) -> None:
    """The V2 rows, in the bench's table."""
    line(f"V2 quota efficiency (API window, {HOURS:g} h)", f"{v2['efficiency']:.3f}", ">= 0.90", v2["efficiency"] >= 0.9)
    line("  end to end incl. start-up and last write", f"{v2['efficiency_end_to_end']:.3f}", "", True)
    line("  GetMetricDataV2 calls per account", f"{v2['calls_per_account']:.0f}", "", True)
    line("  per account (own window)", " ".join(f"{e:.2f}" for e in v2["per_account"]), "", True)
    line("  accounts' first call after the first (s)", " ".join(f"{e:.1f}" for e in v2["starts"]), "", True)
    line("V2 throttled share of calls", f"{v2['throttled_share'] * 100:.2f} %", "<= 2 %", v2["throttled_share"] <= 0.02)
    vps = v2["values"] / v2["cpu"]
    line("V2 stored values per CPU-second", f"{vps:,.0f}", ">= 150,000", vps >= 150_000)
    line("  values stored / collector CPU seconds", f"{v2['values']:,} / {v2['cpu']:.1f}", "", True)
    line("V2 peak RSS", f"{v2['rss']:.0f} MB", "< 250 MB", v2["rss"] < 250)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-v2-"))
    print(f"connect-collector bench, GetMetricDataV2: {ACCOUNTS} accounts x {INSTANCES} instances x {QUEUES} queues x "
          f"{AGENTS} agents, AGENT+QUEUE at 15m over {HOURS:g} h, quota {RATE:g} req/s burst {BURST}", flush=True)
    v2 = collect_v2(workdir, _server_url(), 18704)
    print(f"  {v2['out']}\n")
    print("figure                                                        value   target")
    report(v2, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
