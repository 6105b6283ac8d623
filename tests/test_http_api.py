"""The HTTP API over a real socket, in the service's event loop."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg

from collector.config import load_settings
from collector.simulator import SimulatorConfig
from collector.wiring import serve
from tests.conftest import StartSim, write_config
from tests.helpers import expected_rows, stored_rows, utc_floor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM collection_runs"))
    finally:
        await conn.close()


async def _with_service(settings: Any, body: Any) -> None:
    stop = anyio.Event()
    ready = anyio.Event()
    finished: dict[int, anyio.Event] = {}
    box: dict[str, str] = {}

    def on_ready(url: str | None) -> None:
        box["url"] = url or ""
        ready.set()

    def on_finished(run_id: int) -> None:
        finished.setdefault(run_id, anyio.Event()).set()

    async def waiter(run_id: int) -> None:
        await finished.setdefault(run_id, anyio.Event()).wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(settings, stop=stop, handle_signals=False, on_ready=on_ready,
                                    on_run_finished=on_finished))
        with anyio.fail_after(30):
            await ready.wait()
        try:
            async with aiohttp.ClientSession(box["url"]) as http:
                await body(http, waiter)
        finally:
            stop.set()


async def test_post_collection_runs_to_success_with_exact_rows(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}")
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    start = end - timedelta(hours=2)

    async def body(http: aiohttp.ClientSession, wait_run: Any) -> None:
        async with http.get("/healthz") as r:
            assert r.status == 200
        async with http.get("/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        async with http.post("/collections", json={"start": start.isoformat(), "end": end.isoformat()}) as r:
            assert r.status == 202, await r.text()
            run_id = (await r.json())["id"]
        with anyio.fail_after(60):
            await wait_run(run_id)
        async with http.get(f"/collections/{run_id}") as r:
            run = await r.json()
        assert run["status"] == "succeeded", run
        assert run["slices_total"] == run["slices_done"] == 8
        async with http.get("/collections", params={"status": "succeeded"}) as r:
            page = await r.json()
        assert [x["id"] for x in page["items"]] == [run_id]
        async with http.get("/collections/999999") as r:
            assert r.status == 404
        async with http.get("/metrics") as r:
            text = await r.text()
        assert "collector_rows_written_total" in text
        async with http.get("/openapi.json") as r:
            assert "/collections" in (await r.json())["paths"]

    await _with_service(settings, body)
    want = expected_rows(h.sim, settings.collection, start, end, datetime.now(UTC))
    assert await stored_rows(database_url) == want


async def test_bad_bodies_get_422_naming_the_field_and_start_nothing(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}")
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    cases = [
        ({"end": end.isoformat()}, "start"),
        ({"start": "not a time", "end": end.isoformat()}, "start"),
        ({"start": (end - timedelta(hours=30)).isoformat(), "end": end.isoformat()}, "start"),
        ({"start": (end - timedelta(minutes=10)).isoformat(), "end": end.isoformat()}, "start"),
        ({"start": end.isoformat(), "end": (end + timedelta(hours=3)).isoformat()}, "end"),
        ({"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat(), "instances": ["nope"]}, "instances"),
        ({"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat(), "colour": 1}, "colour"),
    ]

    async def body(http: aiohttp.ClientSession, _wait: Any) -> None:
        for payload, field in cases:
            async with http.post("/collections", json=payload) as r:
                assert r.status == 422, (payload, await r.text())
                detail = (await r.json())["detail"]
                assert any(field in d["loc"] for d in detail), (payload, detail)

    await _with_service(settings, body)
    assert await _run_count(database_url) == 0
    assert sum(h.sim.stats.by_status.values()) == 0


async def test_writes_need_the_token_when_one_is_configured(start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=f'\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\ntoken = "s3cret-token"')
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(minutes=20), 900)
    payload = {"start": (end - timedelta(minutes=15)).isoformat(), "end": end.isoformat()}

    async def body(http: aiohttp.ClientSession, wait_run: Any) -> None:
        async with http.post("/collections", json=payload) as r:
            assert r.status == 401
        async with http.post("/collections", json=payload, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.get("/collections") as r:  # reads stay open
            assert r.status == 200
        async with http.post("/collections", json=payload, headers={"Authorization": "Bearer s3cret-token"}) as r:
            assert r.status == 202
            run_id = (await r.json())["id"]
        with anyio.fail_after(60):
            await wait_run(run_id)

    await _with_service(settings, body)
    assert await _run_count(database_url) == 1


async def test_times_out_of_range_odd_instance_ids_and_v2_ranges_get_422_naming_the_field(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig
) -> None:
    """Issue 18 item 8: none of these is a 500; each 422 names its field."""
    h = await start_sim(small_fleet)
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=(f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\n\n[[profiles]]\n"
                              'name = "agents"\napi = "v2"\ninterval = "1h"\ngroupings = ["QUEUE"]\n'
                              'metrics = ["CONTACTS_HANDLED"]\n[profiles.filters]\nqueues = "all"\n'))
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(hours=2), 3600)
    ok = (end - timedelta(hours=1)).isoformat()
    cases = [
        ({"start": "0001-01-01T00:00:00+01:00", "end": end.isoformat()}, "start"),
        ({"start": ok, "end": "9999-12-31T23:00:00-01:00"}, "end"),
        ({"start": "0001-01-01T00:00:00+01:00", "end": end.isoformat(), "profile": "agents"}, "start"),
        ({"start": ok, "end": end.isoformat(), "instances": ["i-\u0000"]}, "instances"),
        ({"start": ok, "end": end.isoformat(), "instances": [""]}, "instances"),
        ({"start": (end - timedelta(days=100)).isoformat(), "end": end.isoformat(), "profile": "agents"}, "start"),
        ({"start": ok, "end": (end + timedelta(days=2)).isoformat(), "profile": "agents"}, "end"),
        ({"start": end.isoformat(), "end": ok, "profile": "agents"}, "end"),
        ({"start": (end - timedelta(minutes=15)).isoformat(), "end": end.isoformat(), "profile": "agents"}, "start"),
    ]

    async def body(http: aiohttp.ClientSession, _wait: Any) -> None:
        for payload, field in cases:
            async with http.post("/collections", json=payload) as r:
                assert r.status == 422, (payload, await r.text())
                detail = (await r.json())["detail"]
                assert any(field in d["loc"] for d in detail), (payload, detail)
        # a lone surrogate: only expressible as a JSON escape
        raw = ('{"start": "' + ok + '", "end": "' + end.isoformat() + '", "instances": ["i-\\ud800"]}').encode()
        async with http.post("/collections", data=raw, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 422, await r.text()
            assert any("instances" in d["loc"] for d in (await r.json())["detail"])

    await _with_service(settings, body)
    assert await _run_count(database_url) == 0


async def test_an_unknown_profile_gets_422_listing_the_configured_profiles(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: SimulatorConfig
) -> None:
    h = await start_sim(small_fleet)
    port = _free_port()
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim,
                       extra=(f"\n[scheduler]\nenabled = false\n\n[api]\nport = {port}\n\n[[profiles]]\n"
                              'name = "agents"\napi = "v2"\ninterval = "1h"\ngroupings = ["QUEUE"]\n'
                              'metrics = ["CONTACTS_HANDLED"]\n[profiles.filters]\nqueues = "all"\n'))
    settings = load_settings(cfg)
    end = utc_floor(datetime.now(UTC) - timedelta(hours=2), 3600)

    async def body(http: aiohttp.ClientSession, _wait: Any) -> None:
        payload = {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat(), "profile": "agent"}
        async with http.post("/collections", json=payload) as r:
            assert r.status == 422, await r.text()
            detail = (await r.json())["detail"]
        assert [d["loc"] for d in detail] == [["body", "profile"]], detail
        assert "configured profiles: 'default', 'agents'" in detail[0]["msg"], detail
        assert "did you mean 'agents'?" in detail[0]["msg"], detail

    await _with_service(settings, body)
    assert await _run_count(database_url) == 0
