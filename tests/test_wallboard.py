"""The live wallboard's data and HTTP surface: ``PgStore.wallboard`` / ``live_changed_at``
on real Postgres (today's figures against the historical KPI views), ``GET /wallboard/data``
and the server-sent events of ``GET /wallboard/events`` over a real uvicorn socket."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import orjson
import uvicorn

from collector import errors
from collector.adapters.postgres import PgStore, migrate
from collector.apis.current.codec import AGENTS, CURRENT
from collector.apis.current.model import AgentState
from collector.config import load_settings
from collector.http_api import create_app
from collector.model import ProfileInfo, QueueInfo, SliceKey
from collector.ports import CompletedSlice
from collector.runs import collect
from collector.wiring import runtime
from tests.conftest import StartSim, write_config
from tests.helpers import utc_floor

LIVE_METRICS = (("CONTACTS_IN_QUEUE", "COUNT"), ("OLDEST_CONTACT_AGE", "SECONDS"), ("AGENTS_AVAILABLE", "COUNT"),
                ("AGENTS_ON_CONTACT", "COUNT"), ("AGENTS_AFTER_CONTACT_WORK", "COUNT"))
QueueNow = tuple[str, str, str | None, list[float | None]]  # instance, queue, channel, LIVE_METRICS values


def queue_now(instance_id: str, queue_id: str, channel: str | None = "VOICE", *, in_queue: float = 0,
              oldest: float | None = 0, available: float = 0, on_contact: float = 0, acw: float = 0) -> QueueNow:
    return (instance_id, queue_id, channel, [in_queue, oldest, available, on_contact, acw])


def agent_now(agent_id: str, status: str, since: datetime, contacts: int = 0) -> AgentState:
    calls = [{"id": f"c-{n}", "channel": "VOICE", "state": "CONNECTED"} for n in range(contacts)]
    return AgentState(agent_id, status, None, since, None, None, None, orjson.dumps(calls).decode(), "{}")


async def register_live_profiles(store: PgStore) -> None:
    await store.register_profile("queues_now", ProfileInfo("current", "15s", 15, None, "UTC"))
    await store.register_profile("agents_now", ProfileInfo("agents", "15s", 15, None, "UTC"))


async def land_snapshot(store: PgStore, at: datetime, queues: list[QueueNow],
                        agents: dict[str, list[AgentState]]) -> None:
    """A snapshot lands through the store's own write (profiles queues_now and agents_now,
    period [at, at + 15 s), taken at ``at``): per instance, the queue rows and the agents."""
    slices = []
    for iid in sorted({q[0] for q in queues}):
        page = [((qid, ch, None, None, None, None, None), vals) for i, qid, ch, vals in queues if i == iid]
        slices.append(CompletedSlice(SliceKey("queues_now", iid, at, at + timedelta(seconds=15)),
                                     [(LIVE_METRICS, page)], at, None, CURRENT, taken_at=at))
    for iid, states in agents.items():
        slices.append(CompletedSlice(SliceKey("agents_now", iid, at, at + timedelta(seconds=15)),
                                     [("agents", [(a, []) for a in states])] if states else [], at, None, AGENTS,
                                     taken_at=at))
    await store.write(slices, None)


@contextlib.asynccontextmanager
async def serving(app: Any, stop: anyio.Event | None = None) -> AsyncIterator[str]:
    """``app`` on a loopback port of its own (real uvicorn, as in ``serve``); yields its URL.
    ``stop`` (the app's ``stopping``) is set first, so event streams end before the server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                           timeout_graceful_shutdown=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            if stop is not None:
                stop.set()
                await anyio.sleep(0.1)
            server.should_exit = True
    sock.close()


async def _nothing(*_a: Any) -> Any:
    return None


def wallboard_app(wallboard: Callable[[], Awaitable[dict[str, Any]]],
                  changed_at: Callable[[], Awaitable[datetime | None]], stop: anyio.Event,
                  token: str | None = None, poll: float = 0.2) -> Any:
    return create_app(token=token, validate=lambda _b: None, submit=_nothing, get_run=_nothing,
                      list_runs=_nothing, ready=_nothing, wallboard=wallboard, live_changed_at=changed_at,
                      live_poll=poll, stopping=stop)


class Events:
    """A server-sent event stream read frame by frame (field lines up to a blank line)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.raw: list[str] = []

    async def next(self, limit: float = 10) -> dict[str, str]:
        frame: dict[str, str] = {}
        with anyio.fail_after(limit):
            while True:
                line = (await self.resp.content.readline()).decode()
                assert line, "the stream ended"
                assert line.endswith("\n"), line
                self.raw.append(line)
                line = line.rstrip("\n")
                if not line:
                    if frame:
                        return frame
                    continue
                if line.startswith(":"):
                    frame.setdefault("comment", line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                frame[name] = frame[name] + "\n" + value if name in frame else value

    async def next_event(self, event: str, limit: float = 10) -> dict[str, str]:
        with anyio.fail_after(limit):
            while True:
                frame = await self.next(limit)
                if frame.get("event") == event:
                    return frame


async def nothing_within(events: Events, seconds: float) -> None:
    with anyio.move_on_after(seconds) as scope:
        frame = await events.next(seconds + 5)
    assert scope.cancelled_caught, f"unexpected frame {frame}"


# -- the store on real Postgres ------------------------------------------------------------


async def _today_daily(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT instance_id, queue_id, channel, contacts_handled, contacts_queued,"
                            " service_level, profile FROM kpi_queue_daily"
                            " WHERE local_date = (now() AT TIME ZONE time_zone)::date")
    return [{**dict(r), "service_level": orjson.loads(r["service_level"] or "{}")} for r in rows]


async def test_the_store_joins_the_live_rows_with_todays_figures_from_the_historical_views(
    start_sim: StartSim, database_url: str, tmp_path: Path, small_fleet: Any
) -> None:
    h = await start_sim(small_fleet)
    settings = load_settings(write_config(tmp_path / "c.toml", database_url, h.sim))
    now = datetime.now(UTC)
    end = utc_floor(now - timedelta(minutes=20), 900)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = max(end - timedelta(hours=1), midnight) if end > midnight else end - timedelta(hours=1)
    async with runtime(settings) as rt:
        _run, summary = await collect(rt, start, end)
        assert summary.slices_failed == 0
        store = rt.store
        assert isinstance(store, PgStore)
        conn = await asyncpg.connect(database_url)
        try:
            await register_live_profiles(store)
            assert await store.live_changed_at() is None
            empty = await store.wallboard()
            assert empty["queues"] == [] and empty["agents"] == [] and empty["agents_total"] == 0
            daily = await _today_daily(conn)
            queues = [dict(r) for r in await conn.fetch(
                "SELECT i.instance_id, COALESCE(i.name, i.alias, i.instance_id) AS instance_name, q.queue_id, q.name"
                " FROM queues q JOIN instances i ON i.ref = q.instance_ref")]
            assert queues
            live = [queue_now(q["instance_id"], q["queue_id"], ch, in_queue=n)
                    for n, q in enumerate(queues) for ch in ("VOICE", "CHAT", None)]
            at = datetime.now(UTC).replace(microsecond=0)
            since = at - timedelta(minutes=3)
            iid = queues[0]["instance_id"]
            await land_snapshot(store, at, live, {iid: [agent_now("ag-2", "Available", since, contacts=1),
                                                        agent_now("ag-1", "Available", since)]})
            changed = await store.live_changed_at()
            assert changed is not None and changed >= at
            board = await store.wallboard()
        finally:
            await conn.close()
    assert board["changed_at"] == changed
    names = {q["queue_id"]: (q["instance_name"], q["instance_id"], q["name"]) for q in queues}
    order = sorted(live, key=lambda r: (*names[r[1]], r[1], r[2] is not None, r[2] or ""))
    assert [(q["queue_id"], q["channel"], q["contacts_in_queue"]) for q in board["queues"]] == \
        [(r[1], r[2], r[3][0]) for r in order]
    assert all(q["queue_name"] == names[q["queue_id"]][2] and q["snapshot_at"] == at for q in board["queues"])
    assert [(a["agent_id"], a["contacts"], a["contact_states"]) for a in board["agents"]] == \
        [("ag-1", 0, None), ("ag-2", 1, {"CONNECTED": 1})]
    assert board["agents_total"] == 2
    assert board["agents"][0]["status_since"] == since
    if not daily:  # the first 20 minutes of a UTC day: nothing collected today yet
        assert all(q["today"] is None for q in board["queues"])
        return
    assert board["today_sources"] == [{"profile": "default", "time_zone": "UTC", "date": now.date().isoformat()}]
    for q in board["queues"]:
        t = q["today"]
        mine = [d for d in daily if (d["instance_id"], d["queue_id"]) == (q["instance_id"], q["queue_id"])]
        assert t is not None and t["profile"] == "default", q
        if q["channel"] is None:  # no channel on the live row: the queue over all channels
            assert t["scope"] == "queue"
            assert t["contacts_handled"] == sum(d["contacts_handled"] for d in mine)
            queued = sum(d["contacts_queued"] for d in mine)
            for key in ("20", "60"):
                num = sum(d["service_level"][key] * d["contacts_queued"] / 100 for d in mine
                          if d["service_level"].get(key) is not None)
                want = round(100 * num / queued, 2) if queued else None
                assert t["service_level"].get(key) == (None if want is None else
                                                       _approx(t["service_level"][key], want)), (q, key)
        else:  # the live row's channel: the daily view's row of that channel, exactly
            (d,) = [d for d in mine if d["channel"] == q["channel"]]
            assert t["scope"] == "channel"
            assert (t["contacts_handled"], t["contacts_queued"]) == (d["contacts_handled"], d["contacts_queued"])
            assert t["service_level"] == d["service_level"]
        assert t["service_level_threshold"] == ("20" if t["service_level"].get("20") is not None else
                                                t["service_level_threshold"])


def _approx(got: float, want: float) -> float:
    """``got`` when it is ``want`` to the roll-up's rounding (2 decimals: the daily rows are rounded)."""
    assert abs(got - want) <= 0.02, (got, want)
    return got


# -- HTTP: /wallboard, its assets, /wallboard/data, /wallboard/events ---------------------


async def test_the_page_and_its_assets_come_from_this_service_alone_and_need_no_token() -> None:
    board: dict[str, Any] = {"now": datetime.now(UTC), "changed_at": None, "queues": [], "agents": [], "agents_total": 0,
             "today_sources": []}

    async def wallboard() -> dict[str, Any]:
        return board

    async def changed() -> datetime | None:
        return None

    stop = anyio.Event()
    async with serving(wallboard_app(wallboard, changed, stop, token="s3cret"), stop) as url, \
            aiohttp.ClientSession() as s:
        async with s.get(url + "/wallboard") as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
        assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page), page
        refs = set(re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page))
        assert refs == {"/wallboard/assets/wallboard.js", "/wallboard/assets/wallboard.css", "data:,"}  # no favicon fetch
        for ref, media in (("/wallboard/assets/wallboard.js", "text/javascript"),
                           ("/wallboard/assets/wallboard.css", "text/css")):
            async with s.get(url + ref) as r:
                body = await r.text()
                assert r.status == 200 and r.content_type == media and len(body) > 1000, ref
                assert not re.findall(r"https?://", body), ref  # no other host, not even in a comment
        for bad in ("/wallboard/assets/index.html", "/wallboard/assets/..%2f..%2fcli.py", "/wallboard/assets/x.js"):
            async with s.get(url + bad) as r:
                assert r.status == 404, bad
        async with s.get(url + "/wallboard/data") as r:  # reads need no token; writes still do
            assert r.status == 200 and orjson.loads(await r.read())["queues"] == []
        async with s.post(url + "/collections", json={}) as r:
            assert r.status == 401
        async with s.get(url + "/openapi.json") as r:
            paths = orjson.loads(await r.read())["paths"]
        assert "/wallboard/data" in paths and "/wallboard/events" not in paths and "/wallboard" not in paths


async def test_data_and_events_follow_the_snapshots_as_they_land(database_url: str) -> None:
    """Over a real socket: /wallboard/data is the latest snapshot; the event stream sends it
    (framed: event, id, data lines, blank line) only when something new landed, one look at
    ``live_changed_at`` per poll whatever the number of streams; Last-Event-ID resumes."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PgStore(pool)
        await register_live_profiles(store)
        await store.save_instance("i-1", "us-east-1", "111111111111", None, "east")
        await store.save_queues("i-1", "us-east-1", "111111111111", [QueueInfo("q-1", "arn:q-1", "Sales")])
        looks = [0]

        async def changed_at() -> datetime | None:
            looks[0] += 1
            return await store.live_changed_at()

        t0 = datetime.now(UTC).replace(microsecond=0)
        await land_snapshot(store, t0, [queue_now("i-1", "q-1", in_queue=3, oldest=42)],
                            {"i-1": [agent_now("ag-1", "Available", t0 - timedelta(seconds=30))]})
        stop = anyio.Event()
        async with serving(wallboard_app(store.wallboard, changed_at, stop, poll=0.2), stop) as url, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            async with s.get(url + "/wallboard/data") as r:
                assert r.status == 200 and r.content_type == "application/json"
                first = orjson.loads(await r.read())
            assert [(q["queue_name"], q["contacts_in_queue"], q["oldest_contact_age"]) for q in first["queues"]] \
                == [("Sales", 3, 42)]
            assert first["agents"][0]["status"] == "Available" and first["id"] == first["changed_at"]
            sent = datetime.fromisoformat(first["server_time"])  # the instant it was sent, not read
            assert abs((sent - datetime.now(UTC)).total_seconds()) < 5 and sent >= datetime.fromisoformat(first["now"])

            async with s.get(url + "/wallboard/events") as a, \
                    s.get(url + "/wallboard/events", params={"since": first["id"]}) as b:
                assert a.status == 200 and a.content_type == "text/event-stream"
                assert a.headers["cache-control"] == "no-cache"
                ea, eb = Events(a), Events(b)
                assert (await ea.next()) == {"retry": "2000"}
                got = await ea.next()  # no since: the current snapshot at once
                assert got["event"] == "snapshot" and got["id"] == first["id"]
                assert orjson.loads(got["data"])["queues"] == first["queues"]
                assert (await eb.next()) == {"retry": "2000"}
                looks_before = looks[0]
                await nothing_within(eb, 1.0)  # b already has this snapshot: nothing comes
                assert looks[0] - looks_before <= 7  # ~5 polls in a second for two streams and no more

                t1 = t0 + timedelta(seconds=15)
                await land_snapshot(store, t1, [queue_now("i-1", "q-1", in_queue=9, oldest=75)],
                                    {"i-1": [agent_now("ag-1", "Busy", t1, contacts=1)]})
                for stream in (ea, eb):
                    frame = await stream.next_event("snapshot", 5)
                    new = orjson.loads(frame["data"])
                    assert new["queues"][0]["contacts_in_queue"] == 9 and new["agents"][0]["status"] == "Busy"
                    assert frame["id"] == new["id"] == new["changed_at"] != first["id"]
                assert all(line.startswith(("retry: ", "event: ", "id: ", "data: ")) or line == "\n"
                           for line in ea.raw), ea.raw
                resumed = frame["id"]

            async with s.get(url + "/wallboard/events", headers={"Last-Event-ID": resumed}) as c:
                ec = Events(c)
                assert (await ec.next()) == {"retry": "2000"}
                await nothing_within(ec, 0.8)  # a resumed stream resends nothing
    finally:
        await pool.close()


async def test_a_database_away_is_said_on_the_stream_and_answered_503() -> None:
    state = {"down": False}
    t = datetime(2026, 1, 1, tzinfo=UTC)

    async def changed() -> datetime | None:
        if state["down"]:
            raise errors.StorageError("ConnectionRefusedError: postgresql://app:hunter2@db:5432/x refused")
        return t

    async def wallboard() -> dict[str, Any]:
        return {"now": t, "changed_at": t, "queues": [], "agents": [], "agents_total": 0, "today_sources": []}

    stop = anyio.Event()
    async with serving(wallboard_app(wallboard, changed, stop, poll=0.1), stop) as url, \
            aiohttp.ClientSession() as s, s.get(url + "/wallboard/events") as r:
        ev = Events(r)
        await ev.next_event("snapshot")
        state["down"] = True
        frame = await ev.next_event("unavailable")
        assert "ConnectionRefusedError" in orjson.loads(frame["data"])["reason"]
        assert "hunter2" not in frame["data"]
        async with s.get(url + "/wallboard/data") as d:
            assert d.status == 503
        state["down"] = False
        again = await ev.next_event("snapshot")  # back: the snapshot again, though unchanged
        assert again["id"] == t.isoformat()


def test_the_wheel_ships_every_wallboard_file(tmp_path: Path) -> None:
    """The built wheel (what ``make wheel-check`` installs) holds the page and its assets."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("connect_collector-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"collector/static/wallboard/{p.name}" for p in (root / "collector" / "static" / "wallboard").iterdir()}
    assert wanted == {"collector/static/wallboard/index.html", "collector/static/wallboard/wallboard.js",
                      "collector/static/wallboard/wallboard.css"}
    assert wanted <= names, sorted(wanted - names)


def test_each_queue_takes_today_from_the_profile_that_reaches_furthest_into_today() -> None:
    """Per (instance, queue): the historical profile whose data reaches furthest (ties: the
    name first); the live row's channel where that profile has it, else the whole queue."""
    from datetime import date

    from collector.adapters.postgres import wallboard_payload

    t = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    def today(profile: str, channel: str | None, through: datetime, handled: float, sl: str | None,
              all_channels: int, queue: str = "q-1") -> dict[str, Any]:
        return {"instance_id": "i-1", "profile": profile, "time_zone": "Europe/Paris", "local_date": date(2026, 3, 2),
                "queue_id": queue, "channel": channel, "all_channels": all_channels, "contacts_queued": 10.0,
                "contacts_handled": handled, "contacts_abandoned": 1.0, "through": through, "service_level": sl}

    rows = [
        today("hourly", None, t, 50, '{"60": 90.0, "20": 80.5, "<=20": 81.0}', 1),
        today("hourly", "VOICE", t, 30, '{"20": 70.0}', 0),
        today("hourly", "CHAT", t, 20, '{"20": null, "60": 95.0}', 0),
        today("a_quarter", None, t, 51, None, 1),  # as far, and first by name
        today("daily", None, t - timedelta(hours=1), 49, None, 1),  # not as far
        today("daily", None, t, 7, '{"20": 50.0}', 1, queue="q-2"),
    ]
    # a_quarter wins q-1, but has no channel rows: its queue total for every live row
    live: list[dict[str, Any]] = [{"instance_id": "i-1", "queue_id": "q-1", "channel": "VOICE"},
            {"instance_id": "i-1", "queue_id": "q-2", "channel": None},
            {"instance_id": "i-1", "queue_id": "q-3", "channel": "VOICE"}]
    out = wallboard_payload(t, t, live, [], rows)
    q1, q2, q3 = (q["today"] for q in out["queues"])
    assert (q1["profile"], q1["scope"], q1["contacts_handled"], q1["service_level_pct"]) == ("a_quarter", "queue", 51,
                                                                                            None)
    assert (q2["profile"], q2["scope"], q2["service_level_threshold"], q2["service_level_pct"]) == \
        ("daily", "queue", "20", 50.0)
    assert q3 is None
    assert out["today_sources"] == [{"profile": "a_quarter", "time_zone": "Europe/Paris", "date": "2026-03-02"},
                                    {"profile": "daily", "time_zone": "Europe/Paris", "date": "2026-03-02"}]
    # without a_quarter, hourly wins q-1 and has the live rows' channels
    rows = [r for r in rows if r["profile"] != "a_quarter"]
    live += [{"instance_id": "i-1", "queue_id": "q-1", "channel": "CHAT"},
             {"instance_id": "i-1", "queue_id": "q-1", "channel": None},
             {"instance_id": "i-1", "queue_id": "q-1", "channel": "TASK"}]
    voice, _q2, _q3, chat, whole, task = (q["today"] for q in wallboard_payload(t, t, live, [], rows)["queues"])
    assert (voice["scope"], voice["contacts_handled"], voice["service_level_pct"]) == ("channel", 30, 70.0)
    assert (chat["scope"], chat["service_level_threshold"], chat["service_level_pct"]) == ("channel", "60", 95.0)
    assert (whole["scope"], whole["contacts_handled"]) == ("queue", 50)
    assert list(whole["service_level"]) == ["20", "<=20", "60"] and whole["service_level_pct"] == 80.5
    assert (task["scope"], task["contacts_handled"]) == ("queue", 50)  # a channel the profile has no row of
