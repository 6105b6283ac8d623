"""Shared fixtures: a fresh real Postgres database per test, and the simulator on loopback."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from collector.simulator import FleetSpec, Simulator, SimulatorConfig, running_simulator
from tests.procs import private_pg, serve_procs  # noqa: F401  (fixtures for every test module)

_embedded: dict[str, str] = {}


def _server_url() -> str:
    url = os.environ.get("COLLECTOR_TEST_DATABASE_URL")
    if url:
        return url
    if "url" not in _embedded:
        from collector.adapters.embedded import embedded_dsn

        _embedded["url"] = embedded_dsn(tempfile.mkdtemp(prefix="collector-test-pg-"))
    return _embedded["url"]


def _with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A database of its own for this test, dropped afterwards."""
    admin = _server_url()
    name = f"ct_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield _with_db(admin, name)
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Static credentials, no profile files: the standard chain finds the env keys."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "SIM100000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "simulator-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


class SimHandle:
    def __init__(self, sim: Simulator, url: str) -> None:
        self.sim = sim
        self.url = url


class StartSim(Protocol):
    """The ``start_sim`` fixture: ``await start_sim(config, now=..., monotonic=...)`` -> :class:`SimHandle`."""

    async def __call__(self, config: SimulatorConfig | None = None, *,
                       now: Callable[[], float] = ..., monotonic: Callable[[], float] = ...) -> SimHandle: ...


@pytest.fixture
async def start_sim(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartSim]:
    """``await start_sim(config)`` -> SimHandle; AWS_ENDPOINT_URL_CONNECT points at it."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def start(config: SimulatorConfig | None = None, **kw: Any) -> SimHandle:
            sim = Simulator(config or SimulatorConfig(), **kw)
            url = await stack.enter_async_context(running_simulator(sim))
            monkeypatch.setenv("AWS_ENDPOINT_URL_CONNECT", url)
            return SimHandle(sim, url)

        yield start


def write_config(path: Path, database_url: str, sim: Simulator, collection: str = "", extra: str = "",
                 queues: str = '"all"') -> Path:
    lines = ["[database]", f'dsn = "{database_url}"', "", "[collection]"]
    lines.append(collection or 'granularity = "15m"\ngroupings = ["QUEUE", "CHANNEL"]\nmetrics = "all"\nservice_levels = [20, 60]')
    lines.append(extra)
    for inst in sim.fleet.instances.values():
        lines += ["", "[[instances]]", f'id = "{inst.id}"', f'region = "{inst.region}"',
                  f'account = "{inst.account}"', f"queues = {queues}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def small_fleet() -> SimulatorConfig:
    return SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=6), throttle=False)
