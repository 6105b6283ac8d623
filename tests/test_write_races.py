"""The writer against races: takeovers mid-write, two writers of one slice, lost shards.

Real Postgres; a writer is stalled inside its write transaction through the store's
``pause_in_write`` seam, the way a SIGSTOP or a long GC pause would stall it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import pytest

from collector.adapters.postgres import PgStore, connect_pool, migrate
from collector.apis.v1.model import Dims
from collector.apis.v1.planner import metric_chunks
from collector.apis.v1.unit import CODEC
from collector.model import SliceKey, WriteResult
from collector.ports import CompletedSlice
from tests.conftest import StartSim
from tests.helpers import wait_until

A1 = ("111111111111", "us-east-1")
A2 = ("222222222222", "us-east-1")
START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MS = metric_chunks(["CONTACTS_HANDLED"], [])[0]


def _dims(queue: str) -> Dims:
    return (queue, "VOICE", None, None, None, None, None)


def _slice(instance: str, queues: dict[str, float], fence: tuple[str, str, int] | None = None,
           at: datetime | None = None) -> CompletedSlice:
    key = SliceKey("default", instance, START, START + timedelta(minutes=15))
    rows: list[tuple[Dims, list[float | None]]] = [(_dims(q), [v]) for q, v in queues.items()]
    return CompletedSlice(key, [(MS, rows)], at or datetime.now(UTC), fence, CODEC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(database_url, 4)
    try:
        async with p.acquire() as conn:
            await migrate(conn)
        yield p
    finally:
        await p.close()


async def _stored(pool: asyncpg.Pool) -> dict[tuple[str, str], float]:
    rows = await pool.fetch("SELECT instance_id, queue_id, value FROM historical_metrics")
    return {(r["instance_id"], r["queue_id"]): r["value"] for r in rows}


class _Stall:
    """A writer that stops mid-write (at ``point``) until released."""

    def __init__(self, point: str = "slices_locked") -> None:
        self.point = point
        self.reached = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, point: str) -> None:
        if point == self.point:
            self.reached.set()
            await self.release.wait()


async def test_a_takeover_while_a_write_is_stalled_refuses_the_stale_batch(pool: asyncpg.Pool) -> None:
    old, new = PgStore(pool, replica="r-old"), PgStore(pool, replica="r-new")
    await old.ensure_shards([A1])
    gen = (await old.claim_leases("r-old", 30, 1, [A1]))[A1]
    stall = old.pause_in_write = _Stall()
    stale = _slice("i-1", {"q-stale": 1.0}, (*A1, gen))
    results: dict[str, WriteResult] = {}

    async def write(name: str, store: PgStore, s: CompletedSlice) -> None:
        results[name] = await store.write([s], None)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "old", old, stale)
            await stall.reached.wait()  # r-old is inside its write transaction, stalled
            await pool.execute("UPDATE shard_leases SET expires_at = now() - interval '1 second'")
            assert await new.claim_leases("r-new", 30, 1, [A1]) == {A1: gen + 1}  # the takeover commits
            tg.start_soon(write, "new", new, _slice("i-1", {"q-new": 2.0}, (*A1, gen + 1)))
            stall.release.set()  # r-old wakes up and carries on with its write
    assert results["old"].fenced_keys == [stale.key] and results["old"].rows == 0
    assert "moved on" in results["old"].fenced[0][1]
    assert results["new"].fenced == () and results["new"].rows == 1
    assert await _stored(pool) == {("i-1", "q-new"): 2.0}  # the new owner's rows stand
    assert await pool.fetchval("SELECT rows FROM collected_slices") == 1


async def test_no_takeover_commits_between_the_fence_check_and_the_write(pool: asyncpg.Pool) -> None:
    old, new = PgStore(pool, replica="r-old"), PgStore(pool, replica="r-new")
    await old.ensure_shards([A1])
    gen = (await old.claim_leases("r-old", 30, 1, [A1]))[A1]
    locked, checked = _Stall("slices_locked"), _Stall("fences_checked")

    async def stalls(point: str) -> None:
        await locked(point)
        await checked(point)

    old.pause_in_write = stalls
    mine = _slice("i-1", {"q-1": 1.0}, (*A1, gen))
    results: list[WriteResult] = []

    async def write() -> None:
        results.append(await old.write([mine], None))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await locked.reached.wait()
            # the lease runs out while r-old is mid-write (still valid when its check runs)
            await pool.execute("UPDATE shard_leases SET expires_at = clock_timestamp()")
            locked.release.set()
            await checked.reached.wait()  # checked and still the owner; stalled before writing
            assert await new.claim_leases("r-new", 30, 1, [A1]) == {}  # the lease row is locked by the write
            checked.release.set()
    assert results[0].fenced == () and results[0].rows == 1  # written while the lease was held
    assert await new.claim_leases("r-new", 30, 1, [A1]) == {A1: gen + 1}  # then the takeover goes through
    assert (await old.write([mine], None)).fenced_keys == [mine.key]  # and r-old writes no more


@pytest.mark.parametrize("stalled", ["older", "newer"])
async def test_two_writers_of_one_slice_leave_only_the_newer_collection(
    pool: asyncpg.Pool, database_url: str, stalled: str
) -> None:
    first, second = PgStore(pool), PgStore(pool)
    stall = first.pause_in_write = _Stall()
    older = _slice("i-1", {"q-1": 1.0, "q-2": 2.0})
    newer = _slice("i-1", {"q-3": 3.0}, at=older.collected_at + timedelta(seconds=1))
    a, b = (older, newer) if stalled == "older" else (newer, older)
    dbname = await pool.fetchval("SELECT current_database()")  # the URL may carry ?host=/socket/dir
    second_done = anyio.Event()

    async def second_write() -> None:
        await second.write([b], None)
        second_done.set()

    async def second_finished_or_waits_for_a_lock() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                                " AND wait_event_type = 'Lock'", dbname)
        return second_done.is_set() or bool(n)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.write, [a], None)
            await stall.reached.wait()  # the first writer is mid-write
            tg.start_soon(second_write)
            await wait_until(second_finished_or_waits_for_a_lock, 20)
            stall.release.set()
    assert await _stored(pool) == {("i-1", "q-3"): 3.0}  # the newer one, entirely: not a union
    assert await pool.fetchval("SELECT rows FROM collected_slices") == 1
    assert await pool.fetchval("SELECT last_collected_at FROM collected_slices") == newer.collected_at


async def test_fencing_refuses_only_the_slices_of_lost_shards(pool: asyncpg.Pool) -> None:
    store = PgStore(pool, replica="r-1")
    await store.ensure_shards([A1, A2])
    gens = await store.claim_leases("r-1", 30, 2, [A1, A2])
    # r-1 loses A2 to r-2 (it stalled past the TTL of that shard's lease) but still holds A1
    await pool.execute("UPDATE shard_leases SET expires_at = now() - interval '1 second' WHERE account = $1", A2[0])
    assert (await PgStore(pool, replica="r-2").claim_leases("r-2", 30, 1, [A1, A2])).keys() == {A2}
    held = _slice("i-held", {"q-1": 1.0}, (*A1, gens[A1]))
    lost = _slice("i-lost", {"q-1": 1.0}, (*A2, gens[A2]))
    unfenced = _slice("i-single", {"q-1": 1.0})  # a slice written outside any lease
    result = await store.write([held, lost, unfenced], None)
    assert result.fenced_keys == [lost.key]
    assert result.rows == 2 and result.values == 2
    assert set(await _stored(pool)) == {("i-held", "q-1"), ("i-single", "q-1")}
    rows = await pool.fetch("SELECT i.instance_id FROM collected_slices c JOIN instances i ON i.ref = c.instance_ref")
    assert {r["instance_id"] for r in rows} == {"i-held", "i-single"}


async def test_a_run_that_lost_one_shard_still_writes_the_slices_of_the_others(
    start_sim: StartSim, pool: asyncpg.Pool
) -> None:
    import random

    from collector.adapters.connect import BotocoreConnect
    from collector.apis.v1.api import plan
    from collector.apis.v1.settings import CollectionSettings
    from collector.clock import SystemClock
    from collector.model import Target
    from collector.pipeline import PipelineOptions, run_collection
    from collector.ratelimit import Limiters
    from collector.simulator import FleetSpec, SimulatorConfig
    from collector.writer import WriterOptions
    from tests.helpers import utc_floor

    h = await start_sim(SimulatorConfig(fleet=FleetSpec(accounts=2, queues_per_instance=3), throttle=False))
    store = PgStore(pool, replica="r-1")
    shards = sorted({(i.account, i.region) for i in h.sim.fleet.instances.values()})
    await store.ensure_shards(shards)
    gens = await store.claim_leases("r-1", 30, 2, shards)
    kept, lost = shards
    await pool.execute("UPDATE shard_leases SET expires_at = now() - interval '1 second'"
                       " WHERE account = $1", lost[0])
    assert (await PgStore(pool, replica="r-2").claim_leases("r-2", 30, 1, shards)).keys() == {lost}
    targets = [Target(i.id, i.region, i.account, tuple(i.queues), lease=gens[(i.account, i.region)])
               for i in h.sim.fleet.instances.values()]
    now = datetime.now(UTC)
    end = utc_floor(now - timedelta(minutes=20), 900)
    coll = CollectionSettings(metrics=["CONTACTS_HANDLED"], service_levels=[])
    works = plan(targets, coll, end - timedelta(hours=1), end, now)
    # one batch holds the slices of both shards (flushed when the fetchers are done)
    opts = PipelineOptions(writer=WriterOptions(batch_rows=10**9, batch_seconds=3600))
    async with BotocoreConnect() as source:
        summary = await run_collection(works, source=source, sink=store, limiters=Limiters(),
                                       clock=SystemClock(), opts=opts, rng=random.Random(1))
    by_account = {t.instance_id: t.account for t in targets}
    failed = {key for key, _reason in summary.failures}
    assert failed == {str(w.key) for w in works if by_account[w.key.instance_id] == lost[0]}
    assert all("moved on" in reason for _k, reason in summary.failures)
    assert summary.slices_done == 4 and summary.slices_failed == 4
    rows = await pool.fetch("SELECT i.instance_id FROM collected_slices c JOIN instances i ON i.ref = c.instance_ref")
    assert sorted(by_account[r["instance_id"]] for r in rows) == [kept[0]] * 4  # the held shard's, all of them


async def test_only_the_current_holder_of_a_part_ends_it_and_its_run(pool: asyncpg.Pool) -> None:
    """Issue 18 item 4: a replica stalled while its part was taken over (its heartbeat aged
    out, the part went back to the queue and another replica claimed it) cannot end the
    part, nor settle the run, when it wakes up; the new holder's end is the one that counts."""
    from collector.model import RunSummary

    old, new = PgStore(pool, replica="r-old"), PgStore(pool, replica="r-new")
    await old.heartbeat("r-old", None)
    run_id = await old.queue_run("api", "default", START, START + timedelta(hours=1), ["i-1"])
    await old.add_run_parts(run_id, [A1])
    assert (await old.claim_part("r-old", [A1], 30)) is not None
    assert await old.part_started(run_id, A1, "r-old", 4)
    # r-old stalls: its heartbeat ages out, r-new takes the part over
    await pool.execute("UPDATE replicas SET heartbeat_at = now() - interval '1 hour' WHERE id = 'r-old'")
    await new.heartbeat("r-new", None)
    assert (await new.claim_part("r-new", [A1], 30)) is not None
    assert await new.part_started(run_id, A1, "r-new", 4)
    # r-old wakes up: its writes were fenced, it reports 4 of 4 failed
    stale = RunSummary(slices_total=4, slices_failed=4, failures=[("s", "moved on")] * 4)
    assert await old.finish_part(run_id, A1, "r-old", "failed", stale) is None
    assert not await old.part_started(run_id, A1, "r-old", 4)
    await old.requeue_part(run_id, A1, "r-old", RunSummary())
    part = await pool.fetchrow("SELECT status, claimed_by FROM run_parts WHERE run_id = $1", run_id)
    assert (part["status"], part["claimed_by"]) == ("running", "r-new")
    run = await pool.fetchrow("SELECT status, slices_failed FROM collection_runs WHERE id = $1", run_id)
    assert (run["status"], run["slices_failed"]) == ("running", 0)
    # the holder stores every slice and ends the part: the run succeeds
    await pool.execute("UPDATE collection_runs SET slices_done = 4 WHERE id = $1", run_id)
    assert await new.finish_part(run_id, A1, "r-new", "done", RunSummary(slices_total=4, slices_done=4)) == "succeeded"


async def test_a_write_into_a_day_another_replica_dropped_makes_the_partition_again(pool: asyncpg.Pool) -> None:
    """Issue 18 item 3: the partition cache is per process. After another replica's
    retention dropped a day partition this one had made, a write into that day must not
    fail for ever with "no partition of relation": the cache is refreshed and the day made
    again (its rows go with the next prune, as on a single node)."""
    a, b = PgStore(pool, replica="r-a"), PgStore(pool, replica="r-b")
    await a.write([_slice("i-1", {"q-1": 1.0})], None)
    dropped = await b.prune(START + timedelta(days=1))
    assert dropped == [f"metric_values_{START:%Y%m%d}"]
    result = await a.write([_slice("i-1", {"q-1": 2.0})], None)
    assert result.rows == 1 and await _stored(pool) == {("i-1", "q-1"): 2.0}


class _ClockOff:
    """The system clock, ``hours`` off (a collector whose clock ran fast)."""

    def __init__(self, hours: float) -> None:
        from collector.clock import SystemClock

        self.base, self.off = SystemClock(), timedelta(hours=hours)

    def now(self) -> datetime:
        return self.base.now() + self.off

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)


async def test_newest_collection_wins_on_the_databases_clock_not_each_writers(pool: asyncpg.Pool) -> None:
    """Issue 18 item 6: a collector whose clock runs an hour fast stores a slice; the
    later collection of a collector with a right clock replaces it (before: it was judged
    superseded and dropped). Then the fast one's stale retry of its old collection loses."""
    fast_clock = _ClockOff(1)
    fast, right = PgStore(pool, clock=fast_clock), PgStore(pool)
    early = _slice("i-1", {"q-1": 1.0}, at=fast_clock.now())  # provisional values, stamped an hour ahead
    await fast.write([early], None)
    later = _slice("i-1", {"q-1": 5.0}, at=datetime.now(UTC))  # collected after it, on a right clock
    result = await right.write([later], None)
    assert result.rows == 1 and await _stored(pool) == {("i-1", "q-1"): 5.0}
    await fast.write([early], None)  # the older collection, written again late: left alone
    assert await _stored(pool) == {("i-1", "q-1"): 5.0}
