"""The scheduler: every slice collected once it has settled, again at each revisit
point, and caught up oldest first after downtime while the API still has it.

Progress lives in Postgres (frontiers and collected slices), never in memory,
so a restart resumes where the last acknowledged write left off.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import structlog

from collector import catalog
from collector.config import CollectionSettings
from collector.model import RunSummary, SliceKey, SliceWork, Target
from collector.observability import DB_METER, GAPS, LAG
from collector.planner import plan
from collector.ports import Clock, SchedulerStore
from collector.retry import OUTLAST, retry

log = structlog.get_logger("collector.scheduler")


@dataclass(frozen=True)
class ScheduleOptions:
    settle: int = 900
    revisits: tuple[int, ...] = (3600,)
    initial_backfill: int = 24 * 3600
    catchup_batch: int = 16
    lookback_margin: int = 600
    retry_after: int = 30
    max_sleep: int = 300


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    collection: CollectionSettings


@dataclass
class RoundPlan:
    works: list[SliceWork] = field(default_factory=list)
    gaps: int = 0
    wake_at: datetime | None = None
    lost: list[tuple[SliceKey, str]] = field(default_factory=list)  # due, but cannot be collected: why

    def add(self, t: Target, prof: ProfileSpec, starts: list[int], now: datetime) -> None:
        """Plan the slices ``starts`` of ``t``; those of an instance that cannot be resolved
        fail with its reason (they stay due, are reported every round and age out as gaps)."""
        g = prof.collection.granularity_seconds
        for s in sorted(starts):
            if t.unresolved is not None:
                self.lost.append((SliceKey(prof.name, t.instance_id, _ts(s), _ts(s + g)), t.unresolved))
            else:
                self.works.extend(plan([t], prof.collection, _ts(s), _ts(s + g), now, prof.name))


def _ts(e: int) -> datetime:
    return datetime.fromtimestamp(e, UTC)


def _floor(e: int, g: int) -> int:
    return e - e % g


def _ceil(e: int, g: int) -> int:
    return -(-e // g) * g


async def plan_round(
    store: SchedulerStore,
    targets: Sequence[Target],
    profiles: Sequence[ProfileSpec],
    opts: ScheduleOptions,
    now: datetime,
) -> RoundPlan:
    """What is due now: settled slices from the frontier (oldest first, the newest
    always included), revisits, and gaps for what aged out."""
    out = RoundPlan()
    n = int(now.timestamp())
    wake = n + opts.max_sleep
    delays = list(opts.revisits)
    for prof in profiles:
        g = prof.collection.granularity_seconds
        newest_end = _floor(n - opts.settle, g)
        oldest_ok = _ceil(n - catalog.LOOKBACK_SECONDS + opts.lookback_margin, g)
        wake = min(wake, newest_end + g + opts.settle)
        for t in targets:
            iid = t.instance_id
            frontier_dt = await store.frontier(iid, prof.name, g)
            if frontier_dt is None:
                f = max(_ceil(newest_end - opts.initial_backfill, g), oldest_ok)
                await store.set_frontier(iid, prof.name, g, _ts(f))
            else:
                f = _ceil(int(frontier_dt.timestamp()), g)
            if f < oldest_ok:
                upto = min(oldest_ok, max(newest_end, f))
                done = await store.collected_starts(iid, prof.name, g, _ts(f), _ts(upto))
                lost = [_ts(s) for s in range(f, upto, g) if _ts(s) not in done]
                if lost:
                    await store.record_gaps(
                        iid, prof.name, g, lost, "aged out of the 24-hour lookback before collection", now
                    )
                    GAPS.labels(iid, prof.name).inc(len(lost))
                    out.gaps += len(lost)
                    log.warning("slices_aged_out", instance=iid, profile=prof.name, slices=len(lost),
                                first=lost[0].isoformat(), last=lost[-1].isoformat())
                f = oldest_ok
                await store.set_frontier(iid, prof.name, g, _ts(f))
            starts: list[int] = []
            if f < newest_end:
                done = await store.collected_starts(iid, prof.name, g, _ts(f), _ts(newest_end))
                pending = [s for s in range(f, newest_end, g) if _ts(s) not in done]
                starts = pending[: opts.catchup_batch]
                if pending and pending[-1] not in starts:
                    starts.append(pending[-1])  # the current slice never starves behind catch-up
                if len(pending) > len(starts):
                    wake = n  # more catch-up: go again at once
            if delays:
                for r in await store.revisits_due(iid, prof.name, g, delays, now, _ts(oldest_ok)):
                    e = int(r.timestamp())
                    if e not in starts:
                        starts.append(e)
                nxt = await store.next_revisit(iid, prof.name, g, delays, now, _ts(oldest_ok))
                if nxt is not None:
                    wake = min(wake, int(nxt.timestamp()))
            out.add(t, prof, starts, now)
    out.wake_at = _ts(max(wake, n))
    return out


async def advance_frontiers(
    store: SchedulerStore, targets: Sequence[Target], profiles: Sequence[ProfileSpec], now: datetime,
    opts: ScheduleOptions,
) -> None:
    """Move each frontier over the contiguous run of collected slices; update lag."""
    n = int(now.timestamp())
    for prof in profiles:
        g = prof.collection.granularity_seconds
        newest_end = _floor(n - opts.settle, g)
        for t in targets:
            fd = await store.frontier(t.instance_id, prof.name, g)
            if fd is None:
                continue
            f = int(fd.timestamp())
            done = await store.collected_starts(t.instance_id, prof.name, g, fd, _ts(max(newest_end, f)))
            while f < newest_end and _ts(f) in done:
                f += g
            if f != int(fd.timestamp()):
                await store.set_frontier(t.instance_id, prof.name, g, _ts(f))
            # Nothing collected yet (e.g. an instance that cannot be resolved): it lags since
            # its frontier, the first slice it should have.
            newest = await store.newest_collected(t.instance_id, prof.name, g) or fd
            LAG.labels(t.instance_id, prof.name).set(max(0.0, (now - newest).total_seconds()))


RunRound = Callable[[list[SliceWork], list[tuple[SliceKey, str]]], Awaitable[RunSummary]]


def forget(dropped: set[str], profiles: Sequence[ProfileSpec]) -> None:
    """Instances no longer in the fleet (removed, or no longer discovered) lose their lag
    series, so no alert fires for an instance that is gone."""
    for iid in sorted(dropped):
        log.info("instance_dropped", instance=iid)
        for prof in profiles:
            with contextlib.suppress(KeyError):
                LAG.remove(iid, prof.name)


async def run_scheduler(
    *,
    store: SchedulerStore,
    targets: Callable[[], Awaitable[Sequence[Target]]],
    profiles: Sequence[ProfileSpec],
    opts: ScheduleOptions,
    clock: Clock,
    run_round: RunRound,
    stop: anyio.Event,
    until: datetime | None = None,
) -> None:
    """Round after round until ``stop`` is set (or the clock passes ``until``). A round the
    database cut short (StorageError) is planned again after a capped backoff, for as long
    as the database is away: progress lives in the database, so nothing is lost."""
    rng = random.Random()
    seen: set[str] = set()

    async def one_round() -> tuple[RoundPlan, bool, datetime]:
        ts = await targets()
        now_ids = {t.instance_id for t in ts}
        forget(seen - now_ids, profiles)
        seen.clear()
        seen.update(now_ids)
        now = clock.now()
        rp = await plan_round(store, ts, profiles, opts, now)
        failed = False
        if rp.works or rp.lost:
            log.info("round_started", slices=len(rp.works) + len(rp.lost))
            summary = await run_round(rp.works, rp.lost)
            failed = summary.slices_failed > 0
            await advance_frontiers(store, ts, profiles, clock.now(), opts)
        else:
            await advance_frontiers(store, ts, profiles, now, opts)
        return rp, failed, now

    while not stop.is_set() and (until is None or clock.now() < until):
        rp, failed, now = await retry(one_round, operation="scheduler_round", policy=OUTLAST, clock=clock,
                                      rng=rng, meter=DB_METER)
        if (rp.works or rp.lost) and stop.is_set():
            break
        wake = rp.wake_at or now
        if failed:
            wake = max(wake, clock.now() + timedelta(seconds=opts.retry_after))
        if until is not None:
            wake = min(wake, until)
        delay = (wake - clock.now()).total_seconds()
        if delay > 0 and not ((rp.works or rp.lost) and wake <= now):
            await sleep_or_stop(clock, delay, stop)


async def sleep_or_stop(clock: Clock, seconds: float, stop: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:

        async def wait_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait_stop)
        await clock.sleep(seconds)
        tg.cancel_scope.cancel()
