"""The wallboard in a real headless browser (Debian's chromium driven by Playwright; ``make
test`` installs both): the page loads from the service alone, shows the queues and agents of
the latest snapshot, flags an old contact, ticks the time in state, and updates in place
when a new snapshot lands (server-sent events, no reload)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from collector.adapters.postgres import PgStore, migrate
from collector.model import QueueInfo
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
    await page.wait_for_function(
        "n => document.querySelectorAll('#queues .queue').length === n", arg=len(first), timeout=15_000)
    await page.wait_for_function("() => document.getElementById('status').textContent === 'live'",
                                 timeout=15_000)
    await _expect_queues(page, first)
    await page.evaluate("() => { window.__same_page = true; }")
    in_state = await _texts(page, "#agents td.in-state")
    assert in_state and all(t and t != "\u2013" for t in in_state), in_state
    await anyio.sleep(1.3)
    assert await _texts(page, "#agents td.in-state") != in_state  # ticking in the browser
    before = await page.evaluate("() => document.body.dataset.snapshotId")

    await land_next()
    await page.wait_for_function("id => document.body.dataset.snapshotId !== id", arg=before, timeout=20_000)
    await page.wait_for_function(
        "n => document.querySelectorAll('#queues .queue').length === n", arg=len(second), timeout=5_000)
    await _expect_queues(page, second)
    assert await page.evaluate("() => window.__same_page === true")  # updated in place, not reloaded
    await page.screenshot(path=os.environ.get("COLLECTOR_WALLBOARD_SCREENSHOT", "/tmp/wallboard.png"))
    await page.close()
    assert watch.errors == []
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
