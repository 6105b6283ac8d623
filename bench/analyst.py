"""`python -m bench.analyst`: where analysts look, timed side by side in one run (issue 19,
item 2). 6 hours of 2 accounts x 300 queues collected from the simulator, then service
level per queue per day from ``historical_metrics_wide`` and from ``kpi_queue_daily``
against an hourly sum over the long view of the same data (best of 3 each)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.common import _env, _fresh_db, _run, _server_url, _values, line

ACCOUNTS, QUEUES, HOURS = 2, 300, 6
QUERIES = Path(__file__).with_name("sql") / "analyst.sql"


def _queries() -> dict[str, str]:
    parts = re.split(r"^-- name: (\w+)\n", QUERIES.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


async def _time(dsn: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        out: dict[str, float] = {}
        for name, sql in _queries().items():
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                await conn.fetch(sql)
                best = min(best, time.perf_counter() - t)
            out[name] = best
        return out
    finally:
        await conn.close()


def analyst(workdir: Path, server: str, port: int) -> dict[str, float]:
    cfg = workdir / "sim-analyst.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "simulate", "--port", str(port), "--accounts", str(ACCOUNTS),
         "--queues", str(QUEUES), "--write-config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        if "listening" not in proc.stdout.readline():
            raise SystemExit("simulator did not start")
        dsn = asyncio.run(_fresh_db(server))
        conf = workdir / "collector-analyst.toml"
        conf.write_text(f'[database]\ndsn = "{dsn}"\n\n' + cfg.read_text())
        n = int((datetime.now(UTC) - timedelta(minutes=20)).timestamp())
        end = datetime.fromtimestamp(n - n % 900, UTC)
        _run([sys.executable, "-m", "collector", "collect", "--config", str(conf), "--no-progress",
              "--start", (end - timedelta(hours=HOURS)).isoformat(), "--end", end.isoformat()],
             _env(f"http://127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(10)
    times = asyncio.run(_time(dsn))
    times["values"] = float(asyncio.run(_values(dsn)))
    return times


def report(t: dict[str, float]) -> None:
    base = t["hourly_sum_long"]
    line(f"SL per queue per day, wide view ({t['values'] / 1e6:.1f} M values)",
         f"{t['service_level_per_day_wide']:.2f} s / {base:.2f} s = {t['service_level_per_day_wide'] / base:.2f}x",
         "<= 2x hourly sum", t["service_level_per_day_wide"] <= 2 * base)
    line("SL per queue per day, kpi_queue_daily",
         f"{t['service_level_per_day_kpi']:.2f} s / {base:.2f} s = {t['service_level_per_day_kpi'] / base:.2f}x",
         "< wide view", t["service_level_per_day_kpi"] < t["service_level_per_day_wide"])


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-analyst-"))
    t = analyst(workdir, _server_url(), 18705)
    print("figure                                                        value   target")
    report(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
