"""The scheduler: every slice collected once it has settled, again at each revisit
point, and caught up oldest first after downtime while the API still has it; a slice
that ages out first is recorded as a gap.

It is written once for every profile: a profile's metric API (:class:`MetricApi`)
gives its calendar (slice boundaries, in UTC or a time zone), its lookback and its
fetch units; nothing here knows which API that is. Progress lives in Postgres
(frontiers and collected slices), never in memory, so a restart resumes where the
last acknowledged write left off, and a round reads it in one call.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import anyio
import structlog

from collector import errors
from collector.calendar import Span, ceil, lookback_edge, runs_of, tile
from collector.clock import sleep_or_stop
from collector.model import RunSummary, ScheduleOptions, Series, SeriesState, SliceKey, Target
from collector.observability import DB_METER, GAPS, LAG
from collector.ports import Calendar, Clock, FetchUnit, MetricApi, SchedulerStore
from collector.retry import OUTLAST, retry

log = structlog.get_logger("collector.scheduler")

X = TypeVar("X")


@dataclass
class RoundPlan:
    units: list[FetchUnit] = field(default_factory=list)
    lost: list[tuple[SliceKey, str]] = field(default_factory=list)  # due, but cannot be collected: why
    gaps: int = 0
    wake_at: datetime | None = None
    more: bool = False  # catch-up left for the next round

    @property
    def slices(self) -> int:
        return sum(len(u.slice_keys) for u in self.units) + len(self.lost)

    def wake(self, at: datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def series_of(t: Target, api: MetricApi) -> Series:
    return Series(t.instance_id, api.profile, api.calendar.seconds, api.calendar.lengths)


def oldest_start(api: MetricApi, now: datetime, o: ScheduleOptions) -> datetime:
    """The earliest slice the lookback still serves, ``lookback_margin`` inside it (``o``:
    the schedule as ``api`` runs it, :meth:`MetricApi.schedule`)."""
    return lookback_edge(api, now, o.lookback_margin)


def newest_end(api: MetricApi, now: datetime, o: ScheduleOptions) -> datetime:
    """The end of the newest slice that has settled."""
    return api.calendar.floor(now - timedelta(seconds=o.settle))


def _span_words(seconds: int) -> str:
    if seconds > 86400:
        return f"{seconds // 86400}-day"
    return f"{seconds // 3600}-hour" if seconds >= 3600 else f"{seconds}-second"


def _collected(state: SeriesState, s: datetime, e: datetime) -> bool:
    c = state.collected.get(s)
    return c is not None and c[0] == int((e - s).total_seconds())


def _past_collected(cal: Calendar, state: SeriesState, f: datetime, newest: datetime) -> datetime:
    """The frontier ``f`` moved over the contiguous run of collected slices (up to ``newest``)."""
    while f < newest and _collected(state, f, cal.next(f)):
        f = cal.next(f)
    return f


# -- one round -----------------------------------------------------------------------------


@dataclass
class _Round:
    """The plan of one round, series by series."""

    store: SchedulerStore
    opts: ScheduleOptions
    now: datetime
    out: RoundPlan
    frontiers: list[tuple[Series, datetime]] = field(default_factory=list)

    async def series(self, t: Target, api: MetricApi, ser: Series, state: SeriesState) -> None:
        cal, o = api.calendar, api.schedule(self.opts)
        newest = newest_end(api, self.now, o)
        oldest = oldest_start(api, self.now, o)
        self.out.wake(cal.next(newest) + timedelta(seconds=o.settle))
        f = await self.frontier(api, ser, state, newest, oldest, o)
        pending = [(s, e) for s, e in tile(cal, f, newest) if not _collected(state, s, e)]
        revisits = self.revisits(cal, state, oldest, o)
        if t.unresolved is not None:
            self.lose(api, t, self.batch(pending, o) + revisits, t.unresolved)
            return
        try:
            units = self.plan(api, t, pending, o)
            again = self.plan(api, t, revisits, o)
        except errors.PlanError as e:
            self.lose(api, t, self.batch(pending, o) + revisits, str(e))
            return
        self.out.units += self.batch(units, o) + again

    def batch(self, due: list[X], o: ScheduleOptions) -> list[X]:
        """Catch-up oldest first, ``catchup_batch`` at a time; the newest never starves."""
        chosen = due[: o.catchup_batch]
        if due and due[-1] is not chosen[-1]:
            chosen.append(due[-1])
        if len(due) > len(chosen):
            self.out.more = True
        return chosen

    def plan(self, api: MetricApi, t: Target, spans: list[Span], o: ScheduleOptions) -> list[FetchUnit]:
        margin = o.lookback_margin
        return [u for s, e in runs_of(spans) for u in api.plan(t, s, e, self.now, margin)]

    def lose(self, api: MetricApi, t: Target, spans: list[Span], reason: str) -> None:
        self.out.lost += [(SliceKey(api.profile, t.instance_id, s, e), reason) for s, e in sorted(set(spans))]

    async def frontier(
        self, api: MetricApi, ser: Series, state: SeriesState, newest: datetime, oldest: datetime,
        o: ScheduleOptions,
    ) -> datetime:
        """Set on first sight, moved past what aged out (gaps) and over what is collected."""
        cal = api.calendar
        if state.frontier is None:
            own = api.initial_backfill
            back = min(o.initial_backfill if own is None else own, api.lookback)
            f = max(ceil(cal, newest - timedelta(seconds=back)), oldest)
        else:
            f = ceil(cal, state.frontier)
            if f < oldest:
                await self.gaps(api, ser, state, tile(cal, f, min(oldest, max(newest, f))))
                f = oldest
        f = _past_collected(cal, state, f, newest)
        if state.frontier is None or f > state.frontier:
            self.frontiers.append((ser, f))
        return f

    async def gaps(self, api: MetricApi, ser: Series, state: SeriesState, spans: list[Span]) -> None:
        lost = [s for s, e in spans if not _collected(state, s, e)]
        if not lost:
            return
        reason = f"aged out of the {_span_words(api.lookback)} lookback before collection"
        await self.store.record_gaps(ser, lost, reason, self.now)
        GAPS.labels(ser.instance_id, ser.profile).inc(len(lost))
        self.out.gaps += len(lost)
        log.warning("slices_aged_out", instance=ser.instance_id, profile=ser.profile, slices=len(lost),
                    first=lost[0].isoformat(), last=lost[-1].isoformat())

    def revisits(self, cal: Calendar, state: SeriesState, oldest: datetime, o: ScheduleOptions) -> list[Span]:
        """Collected slices whose revisit point has passed since they were last collected;
        the next point still ahead wakes the scheduler."""
        due: list[Span] = []
        for s, (secs, last) in state.collected.items():
            e = s + timedelta(seconds=secs)
            if s < oldest or cal.floor(s) != s or cal.next(s) != e:
                continue  # out of the lookback, or a slice of another calendar
            points = [e + timedelta(seconds=d) for d in o.revisits]
            if any(last < p <= self.now for p in points):
                due.append((s, e))
            ahead = [p for p in points if p > self.now and last < p]
            if ahead:
                self.out.wake(min(ahead))
        return due


async def read_state(
    store: SchedulerStore, targets: Sequence[Target], apis: Sequence[MetricApi], opts: ScheduleOptions,
    now: datetime,
) -> list[tuple[Target, MetricApi, Series, SeriesState]]:
    """Every (instance, profile) of the round and what the store knows of it: one call."""
    pairs = [(t, api) for api in apis for t in targets]
    series = [series_of(t, api) for t, api in pairs]
    since = [oldest_start(api, now, api.schedule(opts)) for _t, api in pairs]
    within = max((d for api in apis for d in api.schedule(opts).revisits), default=0)
    states = await store.series_state(series, since, within)
    return [(t, api, ser, st) for (t, api), ser, st in zip(pairs, series, states, strict=True)]


async def plan_round(
    store: SchedulerStore,
    targets: Sequence[Target],
    apis: Sequence[MetricApi],
    opts: ScheduleOptions,
    now: datetime,
) -> RoundPlan:
    """What is due now: settled slices from the frontier (oldest first, the newest
    always included), revisits, and gaps for what aged out."""
    rnd = _Round(store, opts, now, RoundPlan())
    rnd.out.wake(now + timedelta(seconds=opts.max_sleep))
    for t, api, ser, state in await read_state(store, targets, apis, opts, now):
        await rnd.series(t, api, ser, state)
    if rnd.frontiers:
        await store.set_frontiers(rnd.frontiers)
    if rnd.out.more:
        rnd.out.wake_at = now  # more catch-up: go again at once
    return rnd.out


async def advance_frontiers(
    store: SchedulerStore, targets: Sequence[Target], apis: Sequence[MetricApi], now: datetime,
    opts: ScheduleOptions,
) -> None:
    """Move each frontier over the contiguous run of collected slices; update lag."""
    moved: list[tuple[Series, datetime]] = []
    for _t, api, ser, state in await read_state(store, targets, apis, opts, now):
        if state.frontier is None:
            continue
        cal, newest = api.calendar, newest_end(api, now, api.schedule(opts))
        f = _past_collected(cal, state, ceil(cal, state.frontier), newest)
        if f > state.frontier:
            moved.append((ser, f))
        # Nothing collected yet (e.g. an instance that cannot be resolved): it lags since
        # its frontier, the first slice it should have.
        newest_seen = state.newest or state.frontier
        LAG.labels(ser.instance_id, ser.profile).set(max(0.0, (now - newest_seen).total_seconds()))
    if moved:
        await store.set_frontiers(moved)


RunRound = Callable[[list[FetchUnit], list[tuple[SliceKey, str]]], Awaitable[RunSummary]]


def forget(dropped: set[str], apis: Sequence[MetricApi]) -> None:
    """Instances no longer in the fleet (removed, or no longer discovered) lose their lag
    series, so no alert fires for an instance that is gone."""
    for iid in sorted(dropped):
        log.info("instance_dropped", instance=iid)
        for api in apis:
            with contextlib.suppress(KeyError):
                LAG.remove(iid, api.profile)


async def run_scheduler(
    *,
    store: SchedulerStore,
    targets: Callable[[], Awaitable[Sequence[Target]]],
    apis: Sequence[MetricApi],
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
        forget(seen - now_ids, apis)
        seen.clear()
        seen.update(now_ids)
        now = clock.now()
        rp = await plan_round(store, ts, apis, opts, now)
        failed = False
        if rp.units or rp.lost:
            log.info("round_started", slices=rp.slices, units=len(rp.units))
            summary = await run_round(rp.units, rp.lost)
            failed = summary.slices_failed > 0
            await advance_frontiers(store, ts, apis, clock.now(), opts)
        else:
            await advance_frontiers(store, ts, apis, now, opts)
        return rp, failed, now

    while not stop.is_set() and (until is None or clock.now() < until):
        rp, failed, now = await retry(one_round, operation="scheduler_round", policy=OUTLAST, clock=clock,
                                      rng=rng, meter=DB_METER)
        busy = bool(rp.units or rp.lost)
        if busy and stop.is_set():
            break
        wake = rp.wake_at or now
        if failed:
            wake = max(wake, clock.now() + timedelta(seconds=opts.retry_after))
        if until is not None:
            wake = min(wake, until)
        delay = (wake - clock.now()).total_seconds()
        if delay > 0 and not (busy and wake <= now):
            await sleep_or_stop(clock, delay, stop)
