"""What the bench's parts share (``bench/__main__.py``, ``bench/v2.py``): the fleet size,
a database per measurement, the simulator's AWS environment, a collector process timed
alone, and the table's lines. Imports point one way: the parts import this module."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

QUEUES = int(os.environ.get("BENCH_QUEUES", "30"))


@dataclass
class ProcResult:
    wall: float
    cpu: float
    max_rss_mb: float
    out: str


def _server_url() -> str:
    url = os.environ.get("COLLECTOR_BENCH_DATABASE_URL") or os.environ.get("COLLECTOR_TEST_DATABASE_URL")
    if url:
        return url
    from collector.adapters.embedded import embedded_dsn

    return embedded_dsn(tempfile.mkdtemp(prefix="collector-bench-pg-"))


def free_port() -> int:
    """A loopback port nobody listens on now (the fixed ports of the older rows clash when
    two benches run on one machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


async def _fresh_db(server: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_db(server, name)


def _env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL_CONNECT": endpoint, "AWS_ACCESS_KEY_ID": "SIM100000000000",
        "AWS_SECRET_ACCESS_KEY": "simulator", "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
        "COLLECTOR_LOG_LEVEL": "warning",
    })
    env.pop("AWS_PROFILE", None)
    # Measure the collector as installed (pip byte-compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, every run would compile each imported module from source
    # again (about 0.65 s of start-up measured here), a cost no deployment pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> ProcResult:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{out}")
    return ProcResult(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out)


async def _values(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(cardinality(vals)), 0) FROM metric_values"))
    finally:
        await conn.close()


def line(name: str, value: str, target: str, ok: bool) -> None:
    """One row of the bench's table."""
    print(f"  {name:<44} {value:>22}   {target:<14} {'ok' if ok else 'MISSED'}")


class SimProcess:
    """A simulator started in a process of its own by ``argv``; it prints a line with
    ``listening`` once it serves on ``port``."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()
        if "listening" not in self.first_line:
            self.close()
            raise SystemExit(f"simulator did not start: {self.first_line}{self.proc.stdout.read()}")
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats") as r:
            data: dict[str, Any] = orjson.loads(r.read())
            return data

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_sim/stats/reset", method="POST")).close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
