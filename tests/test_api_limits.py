"""The HTTP API's front door over real HTTP (uvicorn on a loopback socket, raw TCP client):
the token before the body, 413 without reading, 429 when the one-off queue is full, and
the configurations that must not start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import uvicorn
from anyio.abc import SocketStream

from collector import errors
from collector.config import load_settings
from collector.http_api import MAX_BODY, CollectionRequest, create_app
from collector.simulator import SimulatorConfig
from tests.conftest import StartSim, write_config

TOKEN = "s3cret-token"
START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
PAYLOAD = orjson.dumps({"start": START.isoformat(), "end": (START + timedelta(minutes=15)).isoformat()})


class _Calls:
    def __init__(self, submit: Callable[[CollectionRequest], Awaitable[int]] | None = None) -> None:
        self.validated: list[CollectionRequest] = []
        self._submit = submit

    def validate(self, body: CollectionRequest) -> None:
        self.validated.append(body)

    async def submit(self, body: CollectionRequest) -> int:
        return await self._submit(body) if self._submit else 7


async def _nothing(*_a: Any) -> Any:
    return None


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections queue here until uvicorn accepts them: no waiting needed
    return sock


@asynccontextmanager
async def serving(calls: _Calls | None = None, token: str | None = TOKEN) -> AsyncIterator[tuple[int, _Calls]]:
    """create_app(...) served by uvicorn on a real loopback socket -> (port, calls)."""
    calls = calls or _Calls()
    app = create_app(token=token, validate=calls.validate, submit=calls.submit, get_run=_nothing,
                     list_runs=_nothing, ready=_nothing)
    sock = _listening()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield sock.getsockname()[1], calls
        finally:
            server.should_exit = True


async def _response(stream: SocketStream) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (the server closes the connection after a refusal)."""
    data = b""
    with anyio.fail_after(20):
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive()
    return int(lines[0].split()[1]), headers, body


def _head(port: int, headers: dict[str, str]) -> bytes:
    lines = ["POST /collections HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_huge_body_without_a_token_gets_401_before_it_is_sent() -> None:
    async with serving() as (port, calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        # announce 100 MB, send only the headers and the first KiB: the answer cannot
        # depend on a body the server never received
        await s.send(_head(port, {"Content-Length": str(100_000_000)}) + b"x" * 1024)
        status, headers, body = await _response(s)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close"
    assert b"bearer token" in body and calls.validated == []


async def test_a_wrong_token_is_refused_before_the_body() -> None:
    async with serving() as (port, calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(_head(port, {"Authorization": "Bearer wrong", "Content-Length": "50000000"}))
        status, _h, _b = await _response(s)
    assert status == 401 and calls.validated == []


async def test_an_announced_body_over_the_limit_gets_413_unread() -> None:
    async with serving() as (port, calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(_head(port, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(MAX_BODY + 1)}))
        status, headers, body = await _response(s)
    assert status == 413 and headers["connection"] == "close"
    assert str(MAX_BODY) in orjson.loads(body)["detail"] and calls.validated == []


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit() -> None:
    chunk = b"x" * 16384
    async with serving() as (port, calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(_head(port, {"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"}))
        for _ in range(MAX_BODY // len(chunk) + 1):  # just past the limit, and no last chunk
            await s.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        status, _h, _b = await _response(s)
    assert status == 413 and calls.validated == []


async def test_a_small_body_with_the_token_is_accepted() -> None:
    async with serving() as (port, calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(_head(port, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(PAYLOAD))})
                     + PAYLOAD)
        status, _h, body = await _response(s)
    assert status == 202 and orjson.loads(body)["id"] == 7
    assert [c.start for c in calls.validated] == [START]


async def test_a_full_queue_answers_429_with_retry_after_and_no_run() -> None:
    async def full(_body: CollectionRequest) -> int:
        raise errors.QueueFull("100 one-off runs are waiting", retry_after=12)

    async with serving(_Calls(full)) as (port, _calls), await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(_head(port, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(PAYLOAD))})
                     + PAYLOAD)
        status, headers, body = await _response(s)
    assert status == 429 and headers["retry-after"] == "12"
    assert "100 one-off runs are waiting" in orjson.loads(body)["detail"]


def test_an_empty_token_is_a_config_error_not_auth_off(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\ntoken = ""\n')
    with pytest.raises(errors.ConfigError, match="token"):
        load_settings(cfg, environ={})
    cfg.write_text("")
    with pytest.raises(errors.ConfigError, match="token"):
        load_settings(cfg, environ={"COLLECTOR_API_TOKEN": ""})
    with pytest.raises(errors.ConfigError, match="token"):
        load_settings(cfg, environ={"COLLECTOR_API__TOKEN": "  "})
    with pytest.raises(errors.ConfigError, match="empty"):
        create_app(token="", validate=_Calls().validate, submit=_Calls().submit, get_run=_nothing,
                   list_runs=_nothing, ready=_nothing)


def test_a_non_loopback_host_without_a_token_must_be_asked_for(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\nhost = "0.0.0.0"\n')
    with pytest.raises(errors.ConfigError, match="allow_unauthenticated"):
        load_settings(cfg, environ={})
    assert load_settings(cfg, environ={"COLLECTOR_API_TOKEN": TOKEN}).api.token == TOKEN
    assert load_settings(cfg, environ={"COLLECTOR_API__ALLOW_UNAUTHENTICATED": "true"}).api.host == "0.0.0.0"
    for loopback in ("127.0.0.1", "::1", "localhost"):
        cfg.write_text(f'[api]\nhost = "{loopback}"\n')
        assert load_settings(cfg, environ={}).api.token is None


def test_serve_with_a_public_host_flag_and_no_token_refuses_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\ndsn = "postgresql://nobody@127.0.0.1:1/none"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    out = subprocess.run([sys.executable, "-m", "collector", "serve", "--config", str(cfg), "--host", "0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "allow_unauthenticated" in out.stderr


async def test_collector_serve_answers_a_huge_unauthenticated_body_without_reading_it(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig
) -> None:
    h = await start_sim(small_fleet)
    sock = _listening()
    port = sock.getsockname()[1]
    sock.close()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=f'\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\ntoken = "{TOKEN}"\n')
    load_settings(cfg)
    env = {**os.environ, "COLLECTOR_LOG_LEVEL": "info"}
    p = await anyio.open_process([sys.executable, "-m", "collector", "serve", "--config", str(cfg)], env=env,
                                 stderr=subprocess.STDOUT)
    try:
        assert p.stdout is not None
        seen = b""
        with anyio.fail_after(60):
            async for chunk in p.stdout:  # the service says when its API listens
                seen += chunk
                if b"api_listening" in seen:
                    break
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            await s.send(_head(port, {"Content-Length": str(93_000_000)}) + b"{" + b" " * 1023)
            status, _h, _b = await _response(s)
        assert status == 401
        async with await anyio.connect_tcp("127.0.0.1", port) as s:
            await s.send(_head(port, {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(93_000_000)}))
            status, _h, _b = await _response(s)
        assert status == 413
    finally:
        p.terminate()
        with anyio.fail_after(40):
            await p.wait()
