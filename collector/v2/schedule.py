"""The scheduler for V2 profiles, beside v1's (:mod:`collector.scheduler`), with the same
rules: a slice is collected once it has settled, again at each revisit point, caught up
oldest first after downtime while the API still has it (90 days), and recorded as a gap
when it ages out first.

What differs: slices are interval-aligned in the profile's time zone (a DST day is 23 or
25 hours), so watermarks are keyed on ``planner.nominal_seconds(interval)`` and collected
slices are looked up by start; and due slices are planned as whole windows (many
slices per request), so catch-up throughput comes from range per call. A never-collected
instance starts ``initial_backfill`` back (the profile's, else ``scheduler.initial_backfill``,
at most 90 days).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import structlog

from collector import errors
from collector.config import parse_duration
from collector.fleet import Targets, discovering
from collector.leases import LeaseManager
from collector.model import RunSummary, SliceKey, Target
from collector.observability import GAPS, LAG
from collector.ports import Clock, Runtime, SchedulerStore
from collector.scheduler import ScheduleOptions, sleep_or_stop
from collector.v2 import catalog
from collector.v2 import planner as pl
from collector.v2.fleet import ResourceCache, Resources, needs
from collector.v2.model import V2Window
from collector.v2.ports import V2Store
from collector.v2.settings import V2ProfileSettings
from collector.v2.work import WindowUnit

log = structlog.get_logger("collector.v2.schedule")


@dataclass
class RoundPlanV2:
    windows: list[V2Window] = field(default_factory=list)
    failed: list[tuple[SliceKey, str]] = field(default_factory=list)  # slices that could not be planned
    gaps: int = 0
    wake_at: datetime | None = None
    more: bool = False  # catch-up left for the next round

    @property
    def slices(self) -> int:
        return sum(len(w.slices) for w in self.windows)


def backfill_seconds(profile: V2ProfileSettings, opts: ScheduleOptions) -> int:
    s = parse_duration(profile.initial_backfill) if profile.initial_backfill else opts.initial_backfill
    return min(s, catalog.LOOKBACK_SECONDS)


def runs_of(starts: Sequence[datetime], interval: str, tz: str) -> list[tuple[datetime, datetime]]:
    """Sorted slice starts -> maximal ranges of consecutive slices."""
    out: list[tuple[datetime, datetime]] = []
    for s in sorted(set(starts)):
        e = pl.next_boundary(s, interval, tz)
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


@dataclass
class _Ctx:
    store: SchedulerStore
    v2: V2Store
    opts: ScheduleOptions
    now: datetime
    out: RoundPlanV2


async def _frontier(c: _Ctx, p: V2ProfileSettings, t: Target, newest: datetime, oldest: datetime) -> datetime:
    """The profile's frontier for ``t``: set on first sight, moved past what aged out (gaps)."""
    iv, tz, g = p.interval_period, p.time_zone, pl.nominal_seconds(p.interval_period)
    iid = t.instance_id
    fd = await c.store.frontier(iid, p.name, g)
    if fd is None:
        f = max(pl.ceil_boundary(newest - timedelta(seconds=backfill_seconds(p, c.opts)), iv, tz), oldest)
        await c.store.set_frontier(iid, p.name, g, f)
        return f
    f = pl.ceil_boundary(fd, iv, tz)
    if f < oldest:
        upto = min(oldest, max(newest, f))
        done = await c.v2.collected_starts_v2(iid, p.name, f, upto)
        lost = [s for s, _e in (pl.slices(f, upto, iv, tz) if upto > f else []) if s not in done]
        if lost:
            await c.store.record_gaps(iid, p.name, g, lost, "aged out of the 90-day lookback before collection", c.now)
            GAPS.labels(iid, p.name).inc(len(lost))
            c.out.gaps += len(lost)
            log.warning("slices_aged_out", instance=iid, profile=p.name, slices=len(lost),
                        first=lost[0].isoformat(), last=lost[-1].isoformat())
        f = oldest
        await c.store.set_frontier(iid, p.name, g, f)
    return f


async def _due(c: _Ctx, p: V2ProfileSettings, t: Target, newest: datetime, oldest: datetime) -> list[datetime]:
    """Starts of the slices due now: pending from the frontier, and revisits."""
    iv, tz = p.interval_period, p.time_zone
    f = await _frontier(c, p, t, newest, oldest)
    due: list[datetime] = []
    if f < newest:
        done = await c.v2.collected_starts_v2(t.instance_id, p.name, f, newest)
        due = [s for s, _e in pl.slices(f, newest, iv, tz) if s not in done]
    delays = list(c.opts.revisits)
    if delays:
        due += await c.v2.revisits_due_v2(t.instance_id, p.name, delays, c.now, oldest)
        nxt = await c.v2.next_revisit_v2(t.instance_id, p.name, delays, c.now, oldest)
        if nxt is not None:
            _wake(c, nxt)
    return due


def _wake(c: _Ctx, at: datetime) -> None:
    c.out.wake_at = at if c.out.wake_at is None else min(c.out.wake_at, at)


async def plan_round(
    store: SchedulerStore,
    v2: V2Store,
    targets: Sequence[Target],
    profiles: Sequence[V2ProfileSettings],
    resources: dict[str, Resources],
    opts: ScheduleOptions,
    now: datetime,
) -> RoundPlanV2:
    """What is due now, as whole windows: per target and profile at most ``catchup_batch``
    windows of catch-up (the newest slice always included), and the revisits."""
    c = _Ctx(store, v2, opts, now, RoundPlanV2())
    _wake(c, now + timedelta(seconds=opts.max_sleep))
    for p in profiles:
        iv, tz = p.interval_period, p.time_zone
        newest = pl.newest_end(now - timedelta(seconds=opts.settle), iv, tz)
        oldest = pl.oldest_start(now, iv, tz, opts.lookback_margin)
        _wake(c, pl.next_boundary(newest, iv, tz) + timedelta(seconds=opts.settle))
        for t in targets:
            due = await _due(c, p, t, newest, oldest)
            if due and t.unresolved is not None:  # an instance never resolved: its slices fail, with why
                c.out.failed += [(SliceKey(p.name, t.instance_id, s, pl.next_boundary(s, iv, tz)), t.unresolved)
                                 for s in sorted(set(due))]
                continue
            if not due or t.instance_id not in resources:
                continue
            windows: list[V2Window] = []
            try:
                for s, e in runs_of(due, iv, tz):
                    windows += pl.plan([t], p, s, e, now, resources, opts.lookback_margin)
            except errors.PlanError as exc:
                c.out.failed += [(SliceKey(p.name, t.instance_id, s, pl.next_boundary(s, iv, tz)), str(exc))
                                 for s in due]
                continue
            chosen = windows[: opts.catchup_batch]
            if windows[-1] not in chosen:
                chosen.append(windows[-1])  # the current slice never starves behind catch-up
            if len(windows) > len(chosen):
                c.out.more = True
            c.out.windows += chosen
    if c.out.more:
        c.out.wake_at = now
    return c.out


async def advance_frontiers(
    store: SchedulerStore, v2: V2Store, targets: Sequence[Target], profiles: Sequence[V2ProfileSettings],
    now: datetime, opts: ScheduleOptions,
) -> None:
    """Move each frontier over the contiguous run of collected slices; update lag."""
    for p in profiles:
        iv, tz, g = p.interval_period, p.time_zone, pl.nominal_seconds(p.interval_period)
        newest = pl.newest_end(now - timedelta(seconds=opts.settle), iv, tz)
        for t in targets:
            fd = await store.frontier(t.instance_id, p.name, g)
            if fd is None:
                continue
            f = pl.ceil_boundary(fd, iv, tz)
            if f < newest:
                done = await v2.collected_starts_v2(t.instance_id, p.name, f, newest)
                while f < newest and f in done:
                    f = pl.next_boundary(f, iv, tz)
            if f > fd:
                await store.set_frontier(t.instance_id, p.name, g, f)
            last = await v2.newest_collected_v2(t.instance_id, p.name)
            if last is not None:
                LAG.labels(t.instance_id, p.name).set(max(0.0, (now - last).total_seconds()))


RunRoundV2 = Callable[[RoundPlanV2], Awaitable[RunSummary]]


async def run_scheduler(
    *,
    store: SchedulerStore,
    v2: V2Store,
    targets: Callable[[], Awaitable[Sequence[Target]]],
    resources: Callable[[Sequence[Target]], Awaitable[dict[str, Resources]]],
    profiles: Sequence[V2ProfileSettings],
    opts: ScheduleOptions,
    clock: Clock,
    run_round: RunRoundV2,
    stop: anyio.Event,
    until: datetime | None = None,
) -> None:
    """Round after round until ``stop`` is set (or the clock passes ``until``)."""
    clk = clock
    while not stop.is_set() and (until is None or clk.now() < until):
        ts = await targets()
        found = await resources(ts)
        now = clk.now()
        rp = await plan_round(store, v2, ts, profiles, found, opts, now)
        failed = bool(rp.failed)
        if rp.windows or rp.failed:
            log.info("round_started", api="v2", windows=len(rp.windows), slices=rp.slices)
            summary = await run_round(rp)
            failed = failed or summary.slices_failed > 0
            await advance_frontiers(store, v2, ts, profiles, clk.now(), opts)
            if stop.is_set():
                break
        else:
            await advance_frontiers(store, v2, ts, profiles, now, opts)
        wake = rp.wake_at or now
        if failed:
            wake = max(wake, clk.now() + timedelta(seconds=opts.retry_after))
        if until is not None:
            wake = min(wake, until)
        delay = (wake - clk.now()).total_seconds()
        if delay > 0:
            await sleep_or_stop(clk, delay, stop)


class ServiceLike(Protocol):
    """What :func:`scheduler_loop` needs of :class:`collector.service.Service`."""

    rt: Runtime
    stop: anyio.Event
    until: datetime | None
    leases: LeaseManager | None


async def scheduler_loop(service: ServiceLike, opts: ScheduleOptions) -> None:
    """``collector serve``: schedule every V2 profile (started beside v1's scheduler loop)."""
    from collector.runs import execute  # runs calls into collector.v2.runs: imported late

    rt, settings = service.rt, service.rt.settings
    profiles = settings.v2_profiles()
    if not profiles or not settings.scheduler.enabled or rt.v2 is None:
        return
    if not settings.instances and not discovering(settings):
        return  # the v1 scheduler loop reports it
    ports = rt.v2
    ttl = float(settings.scheduler.seconds("discovery_ttl"))
    # wake at least every discovery_ttl, so new instances are found and removed ones dropped
    opts = dataclasses.replace(opts, max_sleep=max(1, min(opts.max_sleep, int(ttl))))
    leases = service.leases
    if leases is not None:  # wake often enough to pick up shards as leases move
        opts = dataclasses.replace(opts, max_sleep=max(1, int(settings.cluster.lease_ttl / 3)))
    targets = Targets(rt, ttl, lambda: dict(leases.owned) if leases is not None else None)
    cache = ResourceCache(rt, ports, ttl)
    keys = needs(profiles)

    async def resources(ts: Sequence[Target]) -> dict[str, Resources]:
        found, failed = await cache.resolve(ts, keys)
        for iid, reason in failed:
            log.error("instance_unavailable", instance=iid, reason=reason)
        return found

    async def run_round(rp: RoundPlanV2) -> RunSummary:
        units = [WindowUnit(w, ports.source) for w in rp.windows]
        keys_ = [k for w in rp.windows for k in w.slices] + [k for k, _r in rp.failed]
        names = sorted({k.profile for k in keys_})
        run_id = await rt.store.create_run(
            "scheduler", names[0] if len(names) == 1 else ",".join(names),
            min(k.start for k in keys_), max(k.end for k in keys_),
            sorted({k.instance_id for k in keys_}), len(keys_),
        )
        lost = [(str(k), r) for k, r in rp.failed]
        guard = leases.guard if leases is not None else None
        return await execute(rt, units, run_id=run_id, lost=lost, stop=service.stop, kind="scheduled",
                             guard=guard, sink=ports.store)

    await run_scheduler(
        store=rt.store, v2=ports.store, targets=targets, resources=resources, profiles=profiles,
        opts=opts, clock=rt.clock, run_round=run_round, stop=service.stop, until=service.until,
    )
