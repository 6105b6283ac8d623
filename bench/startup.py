"""Start-up off the critical path (``python -m bench.startup``): from process start to the
first GetMetricData request of a one-off ``collector collect``, on a warm database (migrated
by an earlier run), against the simulator in its own process. The simulator stamps each
served call with the system-wide monotonic clock, so the parent's clock before it starts
the collector is comparable. Prints the median of BENCH_STARTUP_RUNS (5) runs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import _env, _fresh_db, _server_url, free_port, line

RUNS = int(os.environ.get("BENCH_STARTUP_RUNS", "5"))


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sim/stats") as r:
        data: dict[str, Any] = orjson.loads(r.read())
        return data


def measure(workdir: Path, server: str, port: int | None = None) -> dict[str, Any]:
    port = port or free_port()
    cfg = workdir / f"sim-startup-{port}.toml"
    sim = subprocess.Popen(
        [sys.executable, "-m", "collector", "simulate", "--port", str(port), "--accounts", "1", "--queues", "10",
         "--write-config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert sim.stdout is not None
        if "listening" not in sim.stdout.readline():
            raise SystemExit("simulator did not start")
        url = f"http://127.0.0.1:{port}"
        dsn = asyncio.run(_fresh_db(server))
        conf = workdir / f"collector-startup-{port}.toml"
        conf.write_text(f'[database]\ndsn = "{dsn}"\n\n' + cfg.read_text())
        n = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp())
        end = datetime.fromtimestamp(n - n % 900, UTC)
        cmd = [sys.executable, "-m", "collector", "collect", "--config", str(conf), "--no-progress",
               "--start", (end - timedelta(minutes=15)).isoformat(), "--end", end.isoformat()]
        env = _env(url)
        subprocess.run(cmd, env=env, check=True, capture_output=True)  # migrates: the database is warm after
        firsts: list[float] = []
        totals: list[float] = []
        for _ in range(RUNS):
            urllib.request.urlopen(urllib.request.Request(f"{url}/_sim/stats/reset", method="POST")).close()
            t0 = time.monotonic()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            totals.append(time.monotonic() - t0)
            windows = _stats(url)["windows"]
            firsts.append(min(w[0] for w in windows.values()) - t0)
    finally:
        sim.terminate()
        sim.wait(10)
    return {"first_call": statistics.median(firsts), "total": statistics.median(totals), "firsts": firsts}


def report(r: dict[str, Any], line: Any) -> None:
    line("start-up: process start to first GetMetricData", f"{r['first_call']:.2f} s", "<= 0.40 s",
         r["first_call"] <= 0.4)
    line("  whole one-slice collect", f"{r['total']:.2f} s", "", True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-startup-"))
    print(f"connect-collector bench, start-up: `collector collect` of one slice on a warm database, "
          f"median of {RUNS} runs", flush=True)
    r = measure(workdir, _server_url())
    print("  runs: " + " ".join(f"{f:.2f}" for f in r["firsts"]))
    report(r, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
