"""The wallboard in a real headless browser (Debian's chromium driven by Playwright; ``make
test`` installs both): the page loads from the service alone, shows the queues and agents of
the latest snapshot, flags an old contact, ticks the time in state, and updates in place
when a new snapshot lands (server-sent events, no reload)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from collector.adapters.postgres import PgStore, migrate
from collector.model import QueueInfo
from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import write_config
from tests.procs import sql_value, wait_sql
from tests.test_wallboard import (
    agent_now,
    land_snapshot,
    queue_now,
    register_live_profiles,
    serving,
    wallboard_app,
)

CHROMIUM = os.environ.get("COLLECTOR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless chromium (the system's: Playwright downloads no browser here)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - make test installs it (pyproject's dev extras)
        pytest.skip("the Python package playwright is not installed (pip install -e '.[dev]')")
    if not HAVE_CHROMIUM:  # pragma: no cover - make test installs it (apt-get install chromium)
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            await b.close()


class PageWatch:
    """Every request the page makes and every error it reports."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)


async def until(page: Any, watch: PageWatch, js: str, arg: Any = None, ms: float = 15_000) -> None:
    """``page.wait_for_function``; on a timeout, the page's text and errors say what it showed."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(js, arg=arg, timeout=ms)
    except PlaywrightTimeout:
        text = await page.evaluate("() => document.body.innerText")
        raise AssertionError(f"not within {ms / 1000:.0f} s: {js}\nerrors: {watch.errors}\npage:\n{text}") from None


async def _texts(page: Any, selector: str) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent.trim())")
    return texts


async def check_wallboard(browser: Any, url: str, first: dict[str, Any], land_next: Any,
                          second: dict[str, Any]) -> None:
    """The page at ``url`` shows ``first`` (queue name -> (in queue, oldest alert?)), then,
    once ``land_next()`` has landed a snapshot, ``second``, without reloading."""
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    watch = PageWatch(page)
    await page.goto(url + "/wallboard")
    await until(page, watch, "n => document.querySelectorAll('#queues .queue').length === n", arg=len(first))
    await until(page, watch, "() => document.getElementById('status').textContent === 'live'")
    await _expect_queues(page, first)
    await page.evaluate("() => { window.__same_page = true; }")
    in_state = await _texts(page, "#agents td.in-state")
    assert in_state and all(t and t != "\u2013" for t in in_state), in_state
    await until(page, watch, "was => [...document.querySelectorAll('#agents td.in-state')]"
                             ".every((td, i) => td.textContent.trim() !== was[i])", arg=in_state, ms=3_000)
    before = await page.evaluate("() => document.body.dataset.snapshotId")
    assert await page.evaluate("() => document.body.dataset.renders") == "1"  # the stream resent nothing

    await land_next()
    await until(page, watch, "id => document.body.dataset.snapshotId !== id", arg=before, ms=20_000)
    await until(page, watch, "n => document.querySelectorAll('#queues .queue').length === n", arg=len(second),
                ms=5_000)
    await _expect_queues(page, second)
    assert await page.evaluate("() => window.__same_page === true")  # updated in place, not reloaded
    await anyio.sleep(1.5)
    assert await page.evaluate("() => document.body.dataset.renders") == "2"  # one event per snapshot
    await page.screenshot(path=os.environ.get("COLLECTOR_WALLBOARD_SCREENSHOT", "/tmp/wallboard.png"))
    await page.close()
    only = await browser.new_page()  # ?queue= shows only the queues whose name contains it
    only_watch = PageWatch(only)
    await only.goto(url + "/wallboard?queue=" + next(iter(second))[:3].lower())
    await until(only, only_watch, "() => document.getElementById('status').textContent === 'live'")
    await _expect_queues(only, dict([next(iter(second.items()))]))
    await only.close()
    assert watch.errors == [] and only_watch.errors == []
    assert watch.requests and all(r.startswith(url + "/") for r in watch.requests), watch.requests
    assert {r.removeprefix(url).split("?")[0] for r in watch.requests} == {
        "/wallboard", "/wallboard/assets/wallboard.css", "/wallboard/assets/wallboard.js", "/wallboard/data",
        "/wallboard/events"}


async def _expect_queues(page: Any, want: dict[str, Any]) -> None:
    cards = await page.eval_on_selector_all("#queues .queue", """cards => cards.map(c => ({
        name: c.querySelector('.name').textContent,
        in_queue: c.querySelector('.in-queue .value').textContent,
        alert: c.classList.contains('alert') && c.querySelector('.oldest').classList.contains('alert'),
        today: c.querySelector('.source').textContent}))""")
    got = {c["name"]: (c["in_queue"], c["alert"]) for c in cards}
    assert got == {name: (str(n), alert) for name, (n, alert) in want.items()}, cards


async def test_the_wallboard_shows_the_latest_snapshot_and_follows_the_next(
    browser: Any, database_url: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PgStore(pool)
        await register_live_profiles(store)
        await store.save_instance("i-1", "us-east-1", "111111111111", None, "east")
        await store.save_queues("i-1", "us-east-1", "111111111111",
                                [QueueInfo("q-1", "arn:q-1", "Sales"), QueueInfo("q-2", "arn:q-2", "Support")])
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=15)
        await land_snapshot(store, t0, [queue_now("i-1", "q-1", in_queue=4, oldest=35, available=2),
                                        queue_now("i-1", "q-2", in_queue=11, oldest=130, on_contact=5)],
                            {"i-1": [agent_now("ag-1", "Available", t0 - timedelta(minutes=2)),
                                     agent_now("ag-2", "Available", t0 - timedelta(seconds=40), contacts=1)]})

        async def land_next() -> None:
            t1 = t0 + timedelta(seconds=15)
            await land_snapshot(store, t1, [queue_now("i-1", "q-1", in_queue=7, oldest=95),
                                            queue_now("i-1", "q-2", in_queue=0, oldest=None)],
                                {"i-1": [agent_now("ag-1", "Busy", t1, contacts=1)]})

        stop = anyio.Event()
        async with serving(wallboard_app(store.wallboard, store.live_changed_at, stop, poll=0.5), stop) as url:
            await check_wallboard(browser, url, {"Sales": (4, False), "Support": (11, True)}, land_next,
                                  {"Sales": (7, True), "Support": (0, False)})
    finally:
        await pool.close()


def _duration(seconds: float | None) -> str:
    """The page's m:ss / h:mm:ss (wallboard.js duration)."""
    if seconds is None:
        return "\u2013"
    s = max(0, int(seconds))
    h, m, r = s // 3600, (s % 3600) // 60, s % 60
    return (f"{h}:{m:02d}" if h else f"{m}") + f":{r:02d}"


_LIVE = """
[scheduler]
initial_backfill = "1h"
revisits = []

[[profiles]]
name = "queues_now"
api = "current"
every = "5s"
groupings = ["QUEUE", "CHANNEL"]

[[profiles]]
name = "agents_now"
api = "agents"
every = "5s"
"""


async def _cards(page: Any) -> list[dict[str, str]]:
    cards: list[dict[str, str]] = await page.eval_on_selector_all("#queues .queue", """cards => cards.map(c => ({
        queue_id: c.dataset.queueId, channel: c.dataset.channel, snapshot_at: c.dataset.snapshotAt,
        name: c.querySelector('.name').textContent,
        in_queue: c.querySelector('.in-queue .value').textContent,
        oldest: c.querySelector('.oldest .value').textContent,
        handled: c.querySelector('.handled .value').textContent,
        source: c.querySelector('.source').textContent}))""")
    return cards


async def _shows_the_stored_snapshot(page: Any, database_url: str) -> str:
    """Every card is the stored snapshot it names (current_queue_history at its instant);
    returns the page's snapshot id."""
    cards = await _cards(page)
    assert cards
    conn = await asyncpg.connect(database_url)
    try:
        for c in cards:
            at = datetime.fromisoformat(c["snapshot_at"])
            row = await conn.fetchrow(
                "SELECT queue_name, contacts_in_queue, oldest_contact_age FROM current_queue_history"
                " WHERE queue_id = $1 AND channel IS NOT DISTINCT FROM $2 AND snapshot_at = $3",
                c["queue_id"], c["channel"] or None, at)
            assert row is not None, c
            assert (c["name"], c["in_queue"], c["oldest"]) == (
                row["queue_name"], f"{round(row['contacts_in_queue']):,}",
                _duration(row["oldest_contact_age"] if row["contacts_in_queue"] else None)), c
        shown = await conn.fetchval("SELECT count(*) FROM current_queue_now")
        assert len(cards) == shown
    finally:
        await conn.close()
    snapshot_id: str = await page.evaluate("() => document.body.dataset.snapshotId")
    return snapshot_id


async def test_a_real_serve_against_the_simulator_drives_the_wallboard(
    browser: Any, start_sim: Any, database_url: str, serve_procs: Any, tmp_path: Path
) -> None:
    """``collector serve`` with live profiles (every 5 s) and the historical default one,
    against the simulator: the page shows the simulator's queues as stored, with today's
    figures from the historical profile, and follows the next snapshots in place."""
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=1, queues_per_instance=3), throttle=False))
    cfg = write_config(tmp_path / "c.toml", database_url, h.sim, extra=_LIVE)
    p = serve_procs(cfg)
    # the historical backfill first (1 h of 15-minute slices): the store reuses today's figures 30 s
    await wait_sql(database_url, "SELECT count(*) FROM collected_slices c JOIN profiles p ON p.id = c.profile_id"
                                 " WHERE p.name = 'default'", lambda n: n >= 4, 90)
    await p.wait_status("/wallboard/data", 200, 60)
    await wait_sql(database_url, "SELECT count(*) FROM current_latest", lambda n: n > 0, 60)
    await wait_sql(database_url, "SELECT count(*) FROM agent_latest", lambda n: n > 0, 60)

    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    watch = PageWatch(page)
    await page.goto(p.url + "/wallboard")
    await until(page, watch, "() => document.getElementById('status').textContent === 'live'", ms=15_000)
    await until(page, watch, "() => document.querySelectorAll('#queues .queue').length > 0", ms=15_000)
    await page.evaluate("() => { window.__same_page = true; }")
    first = await _shows_the_stored_snapshot(page, database_url)
    names = {c["name"] for c in await _cards(page)}
    simulated = {name for inst in h.sim.fleet.instances.values() for name in inst.queues.values()}
    assert names and names <= simulated, (names, simulated)
    assert await page.eval_on_selector_all("#agents tbody tr", "rows => rows.length") == \
        await sql_value(database_url, "SELECT count(DISTINCT agent_id) FROM agent_latest")

    # the next snapshots land (5 s period): the page follows, in place
    await until(page, watch, "id => document.body.dataset.snapshotId !== id", arg=first, ms=20_000)
    second = await _shows_the_stored_snapshot(page, database_url)
    assert second != first and await page.evaluate("() => window.__same_page === true")
    today = await sql_value(database_url, "SELECT count(*) FROM kpi_queue_daily"
                                          " WHERE local_date = (now() AT TIME ZONE time_zone)::date")
    if today:  # the historical backfill reached today: its figures and their profile are shown
        assert all("today from profile default" in c["source"] and c["handled"] != "\u2013"
                   for c in await _cards(page))
        assert "historical profile default" in await page.text_content("#sources")
    await page.screenshot(path=os.environ.get("COLLECTOR_WALLBOARD_SCREENSHOT", "/tmp/wallboard-serve.png"))
    assert watch.errors == []
    assert all(r.startswith(p.url + "/") for r in watch.requests), watch.requests

    # the service stops promptly and cleanly with the page still open
    with anyio.fail_after(30):
        assert await p.stop(signal.SIGTERM) == 0
    assert "Exception in ASGI application" not in p.output()
    await page.close()


def test_make_test_installs_what_the_browser_test_needs(tmp_path: Path) -> None:
    """``make test``: Playwright from the dev extras, Debian's chromium when missing (dry run)."""
    import subprocess
    import tomllib

    root = Path(__file__).resolve().parent.parent
    dev = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("playwright") for d in dev)
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    out = subprocess.run([make, "-n", "--no-print-directory", "-C", str(root), f"VENV={tmp_path / 'venv'}", "test"],
                         capture_output=True, text=True, check=True).stdout
    assert "-e '.[dev]'" in out
    assert "command -v chromium" in out and "apt-get install -y -q --no-install-recommends chromium" in out
