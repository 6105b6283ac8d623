"""Secrets never reach logs or the API; writes need the token; the API binds to loopback."""

from __future__ import annotations

import io
import socket
from contextlib import redirect_stderr
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import pytest

from collector.config import Settings, load_settings
from collector.logs import configure
from collector.simulator import SimulatorConfig
from collector.wiring import serve
from tests.conftest import StartSim, write_config
from tests.helpers import utc_floor

PASSWORD = "pw-Zq81xSecretDsn"
TOKEN = "tok-Lm93SecretApi"
AWS_SECRET = "aws-Kk27SecretKey"


def _with_password(url: str) -> str:
    p = urlsplit(url)
    if p.hostname in (None, "") or ("@" not in p.netloc and p.hostname is None):
        return url
    user = p.username or "postgres"
    host = p.netloc.rsplit("@", 1)[-1]
    return urlunsplit((p.scheme, f"{user}:{PASSWORD}@{host}", p.path, p.query, p.fragment))


def test_api_binds_to_loopback_by_default() -> None:
    assert Settings().api.host == "127.0.0.1"


async def test_no_secret_appears_in_any_log_line_or_api_output(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    h = await start_sim(small_fleet)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = _with_password(database_url)  # trust auth accepts it; the point is that it never shows
    cfg = write_config(tmp_path / "c.toml", dsn, h.sim,
                       extra=f'\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\ntoken = "{TOKEN}"')
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    captured = io.StringIO()
    outputs: list[str] = []
    stop, ready, done = anyio.Event(), anyio.Event(), anyio.Event()
    with redirect_stderr(captured):
        configure("json", "debug")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(settings, stop=stop, handle_signals=False,
                                        on_ready=lambda _u: ready.set(), on_run_finished=lambda _r: done.set()))
            with anyio.fail_after(30):
                await ready.wait()
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                body: dict[str, Any] = {"start": (end - timedelta(minutes=30)).isoformat(), "end": end.isoformat()}
                async with http.post("/collections", json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 202
                    run_id = (await r.json())["id"]
                async with http.post("/collections", json=body, headers={"Authorization": "Bearer nope"}) as r:
                    assert r.status == 401
                    outputs.append(await r.text())
                with anyio.fail_after(60):
                    await done.wait()
                for path in (f"/collections/{run_id}", "/collections", "/readyz", "/metrics", "/openapi.json"):
                    async with http.get(path) as r:
                        outputs.append(await r.text())
            stop.set()
        configure("console", "warning")
    text = captured.getvalue() + "\n".join(outputs)
    assert "batch_written" in text and "run_finished" in text  # the logs really were captured
    for secret in (PASSWORD, TOKEN, AWS_SECRET):
        assert secret not in text


def test_redaction_of_dsn_passwords_and_secret_keys() -> None:
    from collector.logs import _redactor

    event = _redactor(None, "info", {"event": "x", "dsn": "postgresql://u:pw@h/db", "token": "t",
                                     "reason": "connect to postgresql://u:hunter2@h/db failed"})
    assert event["dsn"] == "***" and event["token"] == "***"
    assert "hunter2" not in event["reason"] and "postgresql://u:***@h/db" in event["reason"]
