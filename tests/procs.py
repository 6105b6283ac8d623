"""Real processes for tests: a private Postgres cluster a test can stop and start, and
``collector serve`` as a subprocess with its output captured.

Waiting is polling with a deadline (``anyio.fail_after``): another process's progress is
only visible through its database or its HTTP API, never by sleeping a fixed time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A Postgres cluster of this test alone (pgserver: it also runs as root), which the
    test can stop (``pg_ctl stop -m fast``) and start again on the same socket."""

    def __init__(self, data_dir: Path) -> None:
        if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver's platformdirs wants a private runtime dir
            runtime_dir = Path(f"/tmp/collector-runtime-{os.getuid()}")
            runtime_dir.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        import pgserver

        self.server: Any = pgserver.get_server(str(data_dir.resolve()), cleanup_mode="stop")  # type: ignore[attr-defined]
        self.admin_url: str = self.server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    async def astop(self) -> None:
        await anyio.to_thread.run_sync(self.stop)

    async def astart(self) -> None:
        await anyio.to_thread.run_sync(self.start)

    async def create_database(self) -> str:
        name = f"ct_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def cleanup(self) -> None:
        self.server.cleanup()


@pytest.fixture
async def private_pg(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    """A private cluster; ``private_pg.url`` is a fresh database in it."""
    pg = await anyio.to_thread.run_sync(PrivatePostgres, tmp_path / "pg")
    try:
        yield pg
    finally:
        await anyio.to_thread.run_sync(pg.start)  # cleanup expects a running server
        await anyio.to_thread.run_sync(pg.cleanup)


async def sql_value(url: str, sql: str, *args: object) -> Any:
    """The first column of the first row, or None while the database or table is not there."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        return await conn.fetchval(sql, *args)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], limit: float,
                   what: str | Callable[[], str] = "") -> None:
    """Poll ``predicate`` until true; fail after ``limit`` seconds naming ``what``."""
    try:
        with anyio.fail_after(limit):
            while not await predicate():  # noqa: ASYNC110  (another process: nothing to await on)
                await anyio.sleep(0.1)
    except TimeoutError:
        text = what() if callable(what) else what
        raise AssertionError(f"not within {limit}s: {text or predicate!r}") from None


async def wait_sql(url: str, sql: str, check: Callable[[Any], bool], limit: float, *args: object) -> Any:
    """Poll ``sql`` until ``check(value)``; returns the value."""
    seen: list[Any] = [None]

    async def ok() -> bool:
        seen[0] = await sql_value(url, sql, *args)
        return seen[0] is not None and check(seen[0])

    await wait_for(ok, limit, lambda: f"{sql} (last: {seen[0]!r})")
    return seen[0]


class ServeProcess:
    """``python -m collector serve --config F --port P`` with stdout/stderr in files."""

    def __init__(self, cfg: Path, log_dir: Path, *, port: int | None = None,
                 env: Mapping[str, str] | None = None, name: str = "serve") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        full_env = {**os.environ, "COLLECTOR_LOG_LEVEL": "info", **(env or {})}
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve", "--config", str(cfg), "--port", str(self.port)],
            env=full_env, stdout=self._out, stderr=self._err,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        for f in (self._out, self._err):
            if not f.closed:
                f.flush()
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, bytes] | None:
        """(status, body) of ``GET path``, or None while nothing answers."""
        return await self.request("GET", path)

    async def request(self, method: str, path: str, json: Any = None,
                      headers: Mapping[str, str] | None = None) -> tuple[int, bytes] | None:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                    s.request(method, self.url + path, json=json, headers=dict(headers or {})) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def response(self, method: str, path: str, json: Any = None,
                       headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.request(method, self.url + path, json=json, headers=dict(headers or {})) as r:
            return r.status, await r.read(), dict(r.headers)

    async def lag(self) -> dict[tuple[str, str], float]:
        """``collector_collection_lag_seconds`` from ``/metrics``: (connect_instance, profile) -> seconds."""
        got = await self.get("/metrics")
        assert got is not None and got[0] == 200
        out: dict[tuple[str, str], float] = {}
        head = "collector_collection_lag_seconds{"
        for line in got[1].decode().splitlines():
            if line.startswith(head):
                labels, value = line[len(head):].rsplit("} ", 1)
                kv = dict(x.split("=", 1) for x in labels.split(","))
                out[(kv["connect_instance"].strip('"'), kv["profile"].strip('"'))] = float(value)
        return out

    async def wait_status(self, path: str, status: int, limit: float) -> None:
        """Poll ``GET path`` until it answers ``status`` (the process must stay alive)."""
        async def ok() -> bool:
            if not self.alive():
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            got = await self.get(path)
            return got is not None and got[0] == status

        await wait_for(ok, limit, f"GET {path} -> {status}")

    async def stop(self, sig: int = signal.SIGTERM, limit: float = 60) -> int:
        """Signal the process and wait for it to exit; its exit code."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            rc = int(await anyio.to_thread.run_sync(lambda: self.proc.wait(limit)))
        finally:
            self._out.close()
            self._err.close()
        return rc

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(30)
        self._out.close()
        self._err.close()


class ServeProcs(Protocol):
    """The ``serve_procs`` fixture: ``serve_procs(cfg, port=..., env=...)`` -> :class:`ServeProcess`."""

    def __call__(self, cfg: Path, *, port: int | None = None,
                 env: Mapping[str, str] | None = None) -> ServeProcess: ...


@pytest.fixture
async def serve_procs(tmp_path: Path) -> AsyncIterator[ServeProcs]:
    """``serve_procs(cfg, **kw)`` starts ``collector serve``; all are killed at the end."""
    started: list[ServeProcess] = []

    def start(cfg: Path, **kw: Any) -> ServeProcess:
        p = ServeProcess(cfg, tmp_path, name=f"serve{len(started)}", **kw)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.kill()
