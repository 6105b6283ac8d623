"""The service-fleet row of `make bench` (alone: ``python -m bench.service_fleet``).

A real ``collector serve`` over 100 accounts (each a role assumed through moto's STS, in
the simulator's process) x 5 instances (discovered) x 10 queues, against the simulator in
a process of its own, each account on its own quotas. The service runs four profiles: v1
(``[collection]``, every metric), a V2 profile (QUEUE, a few metrics), and the two
real-time profiles (``api = "current"`` and ``api = "agents"``) every 15 s. Beside it, in
the same bench run and on the same fleet, the same service without the real-time
profiles: the historical collection with and without them, side by side.

How time is driven: the service runs on the wall clock (it has no simulated clock). To
see a steady-state round within the bench's minutes, ``scheduler.settle`` is set so that
the newest 15-minute slice settles DUE seconds after the service starts: the first round
collects the last hour (``initial_backfill = "1h"`` on a fresh database: 4 slices per
instance and profile, the work of a catch-up after an hour of downtime), then one slice
per instance and profile becomes due and is collected as a steady-state round would.
``discovery_ttl`` is short (``BENCH_SVC_TTL``) so a rediscovery of the whole fleet falls
inside the measured window.

Measured from outside the process: RSS and CPU (``/proc/<pid>``, sampled every 0.5 s),
the slices' ``first_collected_at``, the live snapshots as they become visible in the
database (polled every second: the commit time, to within the poll), and the simulator's
per-account log of real-time calls (``/_sim/stats`` ``realtime_at``).

Size: BENCH_FLEET_ACCOUNTS (100), BENCH_FLEET_INSTANCES (5), BENCH_FLEET_QUEUES (10);
BENCH_SVC_DUE (seconds to the steady-state slice, 80), BENCH_SVC_LIVE (seconds the live
run lasts, 210), BENCH_SVC_TTL (discovery_ttl, 120s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import _env, _fresh_db, _server_url, free_port, line
from bench.fleet import INSTANCES, QUEUES, FleetSimulator, _accounts

ACCOUNTS = int(os.environ.get("BENCH_FLEET_ACCOUNTS", "100"))
DUE = int(os.environ.get("BENCH_SVC_DUE", "80"))
LIVE_SECONDS = int(os.environ.get("BENCH_SVC_LIVE", "210"))
TTL = os.environ.get("BENCH_SVC_TTL", "120s")
EVERY = 15
G = 900
GCMD_RATE, GCUD_RATE = 5.0, 2.0  # the collector's defaults (GetCurrentUserData: the lower published figure)
SIM_GCUD_RATE = 5.0  # the simulator's GetCurrentUserData quota

CONFIG = """[database]
dsn = "{dsn}"

[scheduler]
settle = "{settle}s"
initial_backfill = "1h"
revisits = []
discovery_ttl = "{ttl}"

[collection]
granularity = "15m"
groupings = ["QUEUE", "CHANNEL"]
metrics = "all"
service_levels = [20, 60]

[[profiles]]
name = "queues_v2"
api = "v2"
interval = "15m"
groupings = ["QUEUE"]
metrics = ["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "ABANDONMENT_RATE", "AVG_QUEUE_ANSWER_TIME"]
[profiles.filters]
queues = "all"
"""

LIVE = """
[[profiles]]
name = "queues_now"
api = "current"
every = "15s"

[[profiles]]
name = "agents_now"
api = "agents"
every = "15s"
"""

HISTORY = ("default", "queues_v2")
LIVE_PROFILES = ("queues_now", "agents_now")


class Sampler:
    """CPU seconds and RSS of a process, every ``step`` seconds, from /proc."""

    def __init__(self, pid: int, step: float = 0.5) -> None:
        self.pid, self.step = pid, step
        self.samples: list[tuple[float, float, float]] = []  # (wall time, cpu s, rss MB)
        self.hwm = 0.0
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            rss = hwm = 0.0
            with open(f"/proc/{self.pid}/status") as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        rss = int(ln.split()[1]) / 1024
                    elif ln.startswith("VmHWM:"):
                        hwm = int(ln.split()[1]) / 1024
            self.hwm = max(self.hwm, hwm)
            return time.time(), cpu, rss
        except (OSError, IndexError, ValueError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            s = self._read()
            if s:
                self.samples.append(s)
            self._stop.wait(self.step)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def cpu_at(self, t: float) -> float:
        """CPU seconds used by wall time ``t`` (the last sample at or before it)."""
        best = self.samples[0][1]
        for w, c, _r in self.samples:
            if w > t:
                break
            best = c
        return best

    def rss_between(self, a: float, b: float) -> float:
        return max((r for w, _c, r in self.samples if a <= w <= b), default=0.0)


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def _poll_live(dsn: str, stop: asyncio.Event, seen: dict[tuple[int, int, datetime], float]) -> None:
    """Each live snapshot's first sight in the database (its commit, to within the poll)."""
    conn = await asyncpg.connect(dsn)
    try:
        live: list[int] = []
        while not stop.is_set():
            if not live:
                live = [r["id"] for r in await conn.fetch(
                    "SELECT id FROM profiles WHERE api IN ('current', 'agents')")]
            if live:
                since = datetime.now(UTC) - timedelta(seconds=90)
                rows = await conn.fetch(
                    "SELECT instance_ref, profile_id, slice_start FROM collected_slices"
                    " WHERE profile_id = ANY($1::smallint[]) AND slice_start >= $2", live, since)
                now = time.time()
                for r in rows:
                    seen.setdefault((r["instance_ref"], r["profile_id"], r["slice_start"]), now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await conn.close()


def _ready(port: int, proc: subprocess.Popen[str], limit: float = 120) -> float:
    t_end = time.time() + limit
    while time.time() < t_end:
        if proc.poll() is not None:
            raise SystemExit(f"collector serve exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return time.time()
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("collector serve not ready")


async def _history(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(
            "SELECT p.name, c.slice_start, extract(epoch FROM c.first_collected_at)::float8 AS at"
            " FROM collected_slices c JOIN profiles p ON p.id = c.profile_id WHERE p.api IN ('v1', 'v2')"))
    finally:
        await conn.close()


async def _live(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        q = await conn.fetch(
            "SELECT instance_ref, profile_id, slice_start, extract(epoch FROM min(snapshot_at))::float8 AS snap,"
            " extract(epoch FROM min(collected_at))::float8 AS coll FROM current_values"
            " GROUP BY instance_ref, profile_id, slice_start")
        a = await conn.fetch(
            "SELECT instance_ref, profile_id, slice_start, extract(epoch FROM min(snapshot_at))::float8 AS snap"
            " FROM agent_snapshots GROUP BY instance_ref, profile_id, slice_start")
        slices = await conn.fetch(
            "SELECT p.name, c.instance_ref, c.slice_start FROM collected_slices c JOIN profiles p"
            " ON p.id = c.profile_id WHERE p.api IN ('current', 'agents')")
        gaps = await conn.fetch(
            "SELECT p.name, count(*) AS n FROM collection_gaps g JOIN profiles p ON p.id = g.profile_id"
            " WHERE p.api IN ('current', 'agents') GROUP BY p.name")
        n_inst = await conn.fetchval("SELECT count(*) FROM instances")
    finally:
        await conn.close()
    return {"queues": q, "agents": a, "slices": slices, "gaps": {r["name"]: r["n"] for r in gaps},
            "instances": n_inst}


def serve_run(sim: FleetSimulator, server: str, workdir: Path, live: bool) -> dict[str, Any]:
    """One ``collector serve`` over the fleet, into a fresh database, until the steady-state
    slice is collected (and, with the live profiles, for LIVE_SECONDS)."""
    dsn = asyncio.run(_fresh_db(server))
    sim.reset()
    now = time.time()
    boundary = now - now % G
    settle = int(now + DUE - boundary)
    due = boundary + settle  # when [boundary - 15m, boundary) settles
    cfg = workdir / f"serve-{'live' if live else 'history'}.toml"
    cfg.write_text(CONFIG.format(dsn=dsn, settle=settle, ttl=TTL) + (LIVE if live else "") + "\n"
                   + _accounts(sim.accounts))
    port = free_port()
    env = _env(sim.url)
    env.update({"AWS_ENDPOINT_URL_STS": sim.sts_url, "AWS_DEFAULT_REGION": "us-east-1"})
    t_start = time.time()
    log = open(workdir / f"serve-{'live' if live else 'history'}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--config", str(cfg), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sim_sampler = Sampler(sim.proc.pid, 1.0)
    seen: dict[tuple[int, int, datetime], float] = {}
    stop = asyncio.Event()
    backfill = INSTANCES * ACCOUNTS * len(HISTORY) * 4
    steady = INSTANCES * ACCOUNTS * len(HISTORY)
    steady_start = datetime.fromtimestamp(boundary - G, UTC)

    async def drive() -> None:
        poller = asyncio.create_task(_poll_live(dsn, stop, seen)) if live else None
        conn = await asyncpg.connect(dsn)
        try:
            deadline = t_start + max(DUE + 120, LIVE_SECONDS if live else 0)
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"collector serve exited {proc.returncode}")
                n = await conn.fetchval(
                    "SELECT count(*) FROM collected_slices c JOIN profiles p ON p.id = c.profile_id"
                    " WHERE p.api IN ('v1', 'v2') AND c.slice_start = $1", steady_start) if await conn.fetchval(
                    "SELECT to_regclass('collected_slices') IS NOT NULL") else 0
                if n >= steady and (not live or time.time() >= t_start + LIVE_SECONDS):
                    break
                await asyncio.sleep(1)
        finally:
            await conn.close()
            stop.set()
            if poller:
                await poller

    try:
        ready = _ready(port, proc)
        asyncio.run(drive())
        t_end = time.time()
        st = sim.stats()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sampler.stop()
        sim_sampler.stop()
        log.close()

    hist = asyncio.run(_history(dsn))
    first = [r["at"] for r in hist if r["slice_start"] < steady_start]
    newest = {p: [r["at"] - due for r in hist if r["name"] == p and r["slice_start"] == steady_start]
              for p in HISTORY}
    first_end = max(first) if first else float("nan")
    newest_all = [x for v in newest.values() for x in v]
    steady_end = due + max(newest_all) if newest_all else float("nan")
    out: dict[str, Any] = {
        "live": live, "settle": settle, "ready": ready - t_start, "wall": t_end - t_start,
        "rss_peak": sampler.hwm, "rss_end": sampler.samples[-1][2] if sampler.samples else 0.0,
        "first_round_slices": len(first), "first_round_expected": backfill,
        "first_round_wall": first_end - t_start, "first_round_cpu": sampler.cpu_at(first_end),
        "newest_collected": len(newest_all), "newest_expected": steady,
        "newest_lag": {p: (_pct(v, 0.5), max(v) if v else float("nan")) for p, v in newest.items()},
        "steady_round_wall": steady_end - due,
        "steady_round_cpu": sampler.cpu_at(steady_end + 0.5) - sampler.cpu_at(due),
        "by_op_status": st["by_op_status"],
        "sim_cpu_first": _busy(sim_sampler, t_start, first_end),
        "sim_cpu_steady": _busy(sim_sampler, due, steady_end),
        "proc_cpu_first": _busy(sampler, t_start, first_end),
    }
    # history idle, live only: after the first round, before the steady slice is due
    a, b = first_end + 5, due - 2
    out["live_window"] = (a, b)
    out["idle_cpu_per_period"] = (sampler.cpu_at(b) - sampler.cpu_at(a)) / max(1e-9, (b - a) / EVERY) if b > a else None
    if live:
        out.update(_live_figures(asyncio.run(_live(dsn)), seen, st, first_end, t_end, sampler, sim_sampler))
    return out


def _busy(s: Sampler, a: float, b: float) -> float:
    """The share of one core a process used between wall times ``a`` and ``b``."""
    return (s.cpu_at(b) - s.cpu_at(a)) / max(1e-9, b - a)


def _live_figures(db: dict[str, Any], seen: dict[tuple[int, int, datetime], float], st: dict[str, Any],
                  first_end: float, t_end: float, sampler: Sampler, sim_sampler: Sampler) -> dict[str, Any]:
    snap_of: dict[tuple[int, int, datetime], float] = {}
    age_collected = []
    for r in db["queues"]:
        snap_of[(r["instance_ref"], r["profile_id"], r["slice_start"])] = r["snap"]
        age_collected.append(r["coll"] - r["snap"])
    for r in db["agents"]:
        snap_of[(r["instance_ref"], r["profile_id"], r["slice_start"])] = r["snap"]
    queue_pids = {r["profile_id"] for r in db["queues"]}
    age_commit = {"queues_now": [], "agents_now": []}  # type: dict[str, list[float]]
    for k, t in seen.items():
        if k in snap_of:
            age_commit["queues_now" if k[1] in queue_pids else "agents_now"].append(t - snap_of[k])
    # periods with a snapshot, per (instance, profile): while the history's first round (the
    # hour's catch-up) runs, and after it (steady state)
    taken: dict[tuple[str, int], set[float]] = defaultdict(set)
    landed: dict[float, list[float]] = defaultdict(list)  # period -> its snapshots' first sight, s after start
    for r in db["slices"]:
        taken[(r["name"], r["instance_ref"])].add(r["slice_start"].timestamp())
    for (_i, _p, start), t in seen.items():
        landed[start.timestamp()].append(t - start.timestamp())
    first_period = min((min(v) for v in taken.values()), default=first_end)
    w0 = first_end - first_end % EVERY + EVERY  # the first period that starts after the catch-up
    w1 = t_end - t_end % EVERY - 2 * EVERY  # periods whose snapshot had time to land
    periods = [w0 + k * EVERY for k in range(int((w1 - w0) // EVERY) + 1)] if w1 >= w0 else []
    during = [first_period + k * EVERY for k in range(int((w0 - first_period) // EVERY))]

    def shares(ps: list[float]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for (name, _i), v in taken.items():
            out[name].append(sum(1 for p in ps if p in v) / max(1, len(ps)))
        for name in LIVE_PROFILES:  # instances never polled count as 0
            out[name] += [0.0] * (db["instances"] - len(out[name]))
        return dict(out)

    share, share_during = shares(periods), shares(during)
    round_wall = [max(landed[p]) for p in periods if landed.get(p)]
    # calls per period per account, over the same periods
    calls: dict[str, list[int]] = {}
    per_second: dict[str, int] = {}
    for op in ("GetCurrentMetricData", "GetCurrentUserData"):
        counts: Counter[tuple[str, float]] = Counter()
        secs: Counter[tuple[str, int]] = Counter()
        for key, ts in st.get("realtime_at", {}).items():
            o, acct, status = key.split(":")
            if o != op or status != "200":
                continue
            for t in ts:
                p = t - t % EVERY
                if w0 <= p <= w1:
                    counts[(acct, p)] += 1
                secs[(acct, int(t))] += 1
        calls[op] = [counts[(a, p)] for a in {k[0] for k in counts} for p in periods]
        per_second[op] = max(secs.values(), default=0)
    return {
        "age_collected": age_collected, "age_commit": age_commit, "periods": len(periods),
        "share": share, "share_during": share_during, "periods_during": len(during), "gaps": db["gaps"],
        "round_wall": round_wall, "sim_cpu_live": _busy(sim_sampler, w0, w1) if w1 > w0 else float("nan"), "calls": calls, "per_second": per_second,
        "live_cpu_per_period": (sampler.cpu_at(w1) - sampler.cpu_at(w0)) / max(1, len(periods)),
        "rss_live": sampler.rss_between(w0, w1),
    }


def measure(workdir: Path, server: str) -> dict[str, Any]:
    sim = FleetSimulator(ACCOUNTS)
    try:
        history = serve_run(sim, server, workdir, live=False)
        print("  collector serve, fleet, history only: done", flush=True)
        live = serve_run(sim, server, workdir, live=True)
        print("  collector serve, fleet, history + real time: done", flush=True)
    finally:
        sim.close()
    return {"history": history, "live": live}


def report(m: dict[str, Any], line: Any) -> None:
    h, lv = m["history"], m["live"]
    size = f"serve {ACCOUNTS}x{INSTANCES}"
    line(f"{size}: peak RSS, v1+V2+real time", f"{lv['rss_peak']:.0f} MB", "< 300 MB", lv["rss_peak"] < 300)
    line("  v1+V2 only", f"{h['rss_peak']:.0f} MB", "< 300 MB", h["rss_peak"] < 300)
    for r, name in ((h, "v1+V2"), (lv, "v1+V2+live")):
        ok = r["first_round_slices"] == r["first_round_expected"]
        line(f"{size}: first round (1 h catch-up), {name}",
             f"{r['first_round_wall']:.1f} s, {r['first_round_cpu']:.1f} CPU-s", "all slices", ok)
        line("  slices", f"{r['first_round_slices']} / {r['first_round_expected']}", "", ok)
    for r, name in ((h, "v1+V2"), (lv, "v1+V2+live")):
        ok = r["newest_collected"] == r["newest_expected"]
        line(f"{size}: steady round, {name}", f"{r['steady_round_wall']:.1f} s, {r['steady_round_cpu']:.1f} CPU-s",
             "all slices", ok)
    for p in HISTORY:
        hp, lp = h["newest_lag"][p], lv["newest_lag"][p]
        ok = lp[1] <= 1.25 * hp[1] + 2
        line(f"newest {p} slice after settle, live / none", f"max {lp[1]:.1f} / {hp[1]:.1f} s",
             "<= 1.25x + 2s", ok)
        line("  median", f"{lp[0]:.1f} / {hp[0]:.1f} s", "", True)
    if lv.get("idle_cpu_per_period") is not None:
        line("live loop CPU per 15 s period (history idle)", f"{lv['idle_cpu_per_period']:.2f} CPU-s", "< 15", True)
    line("live loop CPU per period, whole window", f"{lv['live_cpu_per_period']:.2f} CPU-s", "", True)
    if h.get("idle_cpu_per_period") is not None:
        line("  history only, idle between rounds", f"{h['idle_cpu_per_period']:.2f} CPU-s", "", True)
    for p in LIVE_PROFILES:
        ages = lv["age_commit"][p]
        line(f"{p}: snapshot age at commit p50/p95", f"{_pct(ages, 0.5):.1f} / {_pct(ages, 0.95):.1f} s",
             "p95 < 15 s", _pct(ages, 0.95) < EVERY)
    ac = lv["age_collected"]
    line("  queues_now: collected_at - snapshot_at p50/p95", f"{_pct(ac, 0.5):.2f} / {_pct(ac, 0.95):.2f} s", "", True)
    for p in LIVE_PROFILES:
        s = lv["share"].get(p, [])
        mn = min(s) if s else 0.0
        line(f"{p}: periods with a snapshot, per instance", f"min {mn:.2f}, mean {sum(s) / max(1, len(s)):.3f}",
             "1.00", mn >= 1.0)
        s = lv["share_during"].get(p, [])
        mn = min(s) if s else 0.0
        line("  while the history's first round runs", f"min {mn:.2f}, mean {sum(s) / max(1, len(s)):.3f}",
             "1.00", mn >= 1.0)
    line("  periods: steady; during first round; gaps", f"{lv['periods']}; {lv['periods_during']}; "
         f"{sum(lv['gaps'].values())}", "", True)
    rw = lv["round_wall"]
    line("live round: all snapshots in, s after start", f"p50 {_pct(rw, 0.5):.1f}, max {max(rw, default=0):.1f}",
         "< 15 s", max(rw, default=99) < EVERY)
    line("simulator busy (share of a core)", f"first {h['sim_cpu_first']:.2f}/{lv['sim_cpu_first']:.2f}, "
         f"live {lv['sim_cpu_live']:.2f}", "", True)
    line("collector busy, first round, none/live", f"{h['proc_cpu_first']:.2f} / {lv['proc_cpu_first']:.2f}", "", True)
    line("ListQueues calls (rediscovery), none/live", f"{h['by_op_status'].get('ListQueues:200', 0)} / "
         f"{lv['by_op_status'].get('ListQueues:200', 0)}", "", True)
    for op, rate, sim_rate in (("GetCurrentMetricData", GCMD_RATE, GCMD_RATE), ("GetCurrentUserData", GCUD_RATE,
                                                                                  SIM_GCUD_RATE)):
        c = lv["calls"].get(op, [])
        mx = max(c, default=0)
        line(f"{op} calls/period/account p50/max", f"{_pct([float(x) for x in c], 0.5):.0f} / {mx}",
             f"<= {rate * EVERY:.0f}", mx <= rate * EVERY)
        line("  most in one second, one account", f"{lv['per_second'][op]}", f"<= {sim_rate:.0f}+burst", True)
        thr = lv["by_op_status"].get(f"{op}:429", 0)
        ok200 = lv["by_op_status"].get(f"{op}:200", 0)
        line(f"  {op} throttled", f"{thr} of {thr + ok200}", "0", thr == 0)
    for op in ("GetMetricData", "GetMetricDataV2"):
        for r, name in ((h, "none"), (lv, "live")):
            thr = r["by_op_status"].get(f"{op}:429", 0)
            line(f"  {op} throttled, {name}", f"{thr} of {thr + r['by_op_status'].get(f'{op}:200', 0)}", "", True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-serve-"))
    print(f"connect-collector bench, service fleet: collector serve over {ACCOUNTS} accounts (roles through STS) x "
          f"{INSTANCES} instances (discovered) x {QUEUES} queues; v1 + V2 profiles, with and without the two "
          f"real-time profiles every {EVERY} s; discovery_ttl {TTL}", flush=True)
    m = measure(workdir, _server_url())
    print("figure                                                        value   target")
    report(m, line)
    print(f"  (logs and configs in {workdir})")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)) if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4096 else None
    raise SystemExit(main())
