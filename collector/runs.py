"""A run's life: check, plan, execute, settle its status. In a cluster a one-off run
is split into (account, Region) parts, each executed by the replica holding that
shard's lease; the run settles when its last part ends."""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

import anyio
import structlog

from collector import errors
from collector.apis import DEFAULT_PROFILE
from collector.calendar import lookback_edge, tile
from collector.config import InstanceSettings, Settings
from collector.fleet import Resolution, resolve, select_instances
from collector.guard import ShardGuard
from collector.model import PartRecord, RunSummary, Shard, SliceKey
from collector.observability import DB_METER, GAPS, RUN_DURATION, RUNS
from collector.pipeline import run_collection
from collector.ports import FetchUnit, MetricApi
from collector.progress import Progress
from collector.retry import OUTLAST, RetryPolicy, retry
from collector.runtime import Runtime
from collector.scheduler import series_of
from collector.validation import instance_id_problem

log = structlog.get_logger("collector.runs")

Finish = Callable[[str, RunSummary], Awaitable[None]]
Lost = list[tuple[str, str]]  # (slice or scope, reason): slices that cannot be collected


def check_collection(
    settings: Settings, apis: Mapping[str, MetricApi], start: datetime, end: datetime, instances: Sequence[str],
    now: datetime, profile: str = DEFAULT_PROFILE,
) -> list[InstanceSettings]:
    """Refuse a collection that cannot be served, before any call or connection."""
    api = apis.get(profile)
    if api is None:
        raise errors.unknown_profile(profile, apis)
    for iid in instances:
        if (why := instance_id_problem(iid)) is not None:
            raise errors.BadInput(f"instance {iid!r}: {why}", field="instances")
    api.check_range(start, end, now, settings.scheduler.seconds("lookback_margin"))
    return select_instances(settings, instances)


def planned(
    rt: Runtime, api: MetricApi, res: Resolution, start: datetime, end: datetime
) -> tuple[list[FetchUnit], Lost]:
    """The units to collect, and the failures standing for the slices that cannot be. Each
    target is planned on its own, so one that cannot be (nothing discovered for an
    ``"all"`` filter) fails only its own slices."""
    now, margin = rt.clock.now(), rt.settings.scheduler.seconds("lookback_margin")
    units: list[FetchUnit] = []
    failed = list(res.failed_instances)
    for t in res.targets:
        try:
            units += api.plan(t, start, end, now, margin)
        except errors.PlanError as e:
            failed.append((t.instance_id, e.detail))
    spans = tile(api.calendar, start, end)
    lost = [(str(SliceKey(api.profile, iid, s, e)), reason) for iid, reason in failed for s, e in spans]
    return units, lost + list(res.failed_scopes)


def clip_start(api: MetricApi, start: datetime, end: datetime, now: datetime, margin: int) -> datetime:
    """For a run accepted earlier (queued, interrupted): its start moved up to the earliest
    slice the API still serves ``margin`` seconds inside its lookback (at most ``end``)."""
    return min(max(start, lookback_edge(api, now, margin)), end)


async def aged_out(rt: Runtime, api: MetricApi, res: Resolution, start: datetime, cut: datetime) -> Lost:
    """The slices of [start, cut) that aged out of the lookback before this run collected
    them (those an earlier attempt stored are not lost): recorded as gaps, and returned
    as the run's failures."""
    if cut <= start:
        return []
    spans = tile(api.calendar, start, cut)
    reason = "aged out of the lookback before this run collected it"
    lost: Lost = []
    series = [series_of(t, api) for t in res.targets]
    # every collected slice from start on, of every target: one read
    states = await rt.store.series_state(series, [start] * len(series), 10**9)
    for t, ser, state in zip(res.targets, series, states, strict=True):
        missing = [(s, e) for s, e in spans if state.collected.get(s, (0,))[0] != int((e - s).total_seconds())]
        if missing:
            await rt.store.record_gaps(ser, [s for s, _e in missing], reason, rt.clock.now())
            GAPS.labels(t.instance_id, api.profile).inc(len(missing))
            log.warning("slices_aged_out", instance=t.instance_id, profile=api.profile, slices=len(missing),
                        first=missing[0][0].isoformat(), last=missing[-1][0].isoformat())
        lost += [(str(SliceKey(api.profile, t.instance_id, s, e)), reason) for s, e in missing]
    return lost


def slices_in(units: Sequence[FetchUnit], lost: Lost) -> int:
    return sum(len(u.slice_keys) for u in units) + len(lost)


def run_status(summary: RunSummary) -> str:
    """A run's status from its summary: every slice accounted for, and how many failed."""
    if summary.slices_done + summary.slices_failed < summary.slices_total:
        return "interrupted"
    if summary.slices_failed == 0:
        return "succeeded"
    return "partial" if summary.slices_done else "failed"


def part_status(run_status_: str) -> str:
    """A run part is ``done`` when it collected what it could, else ``failed``."""
    return "done" if run_status_ in ("succeeded", "partial") else "failed"


def failed_summary(reason: str, where: str = "") -> RunSummary:
    """A run (or part) that failed before any slice: one failure with the reason."""
    return RunSummary(failures=[(where, reason)])


async def _settle(rt: Runtime, run_id: int, status: str, summary: RunSummary, finish: Finish | None) -> None:
    """Record the end of a run. Each attempt is shielded (never cut in half); under the
    service (``write_attempts=None``) a database outage is waited out, but only until the
    service is cancelled: a run whose end cannot be recorded at shutdown is marked
    interrupted by the next start."""
    if finish is None:
        finish = functools.partial(rt.store.finish_run, run_id)
    policy = OUTLAST if rt.outlasts else RetryPolicy(max_attempts=1)
    await retry(functools.partial(finish, status, summary), operation="finish_run", policy=policy, clock=rt.clock,
                rng=random.Random(), meter=DB_METER, shield=True)


async def _requeue(rt: Runtime, run_id: int, shard: Shard) -> None:
    """Put a part back in the queue; under the service a database outage is waited out."""
    assert rt.store.replica is not None
    policy = OUTLAST if rt.outlasts else RetryPolicy(max_attempts=1)
    await retry(functools.partial(rt.store.requeue_part, run_id, shard, rt.store.replica, RunSummary()),
                operation="requeue_part", policy=policy, clock=rt.clock, rng=random.Random(), meter=DB_METER,
                shield=True)


async def execute(
    rt: Runtime,
    units: Sequence[FetchUnit],
    *,
    run_id: int,
    lost: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    kind: str = "oneoff",
    finish: Finish | None = None,
    guard: ShardGuard | None = None,
) -> RunSummary:
    """Collect planned units under a run row; the run always ends with a status.

    ``finish(status, summary)`` replaces the default end of the run (a run part ends its
    part and settles the run only when every part is done)."""
    status = "interrupted"
    summary = RunSummary(slices_total=slices_in(units, list(lost)))
    started = rt.clock.monotonic()
    try:
        summary = await run_collection(
            units, source=rt.source, sink=rt.store, limiters=rt.limiters, clock=rt.clock,
            opts=rt.pipeline, run_id=run_id, progress=progress, stop=stop, guard=guard,
        )
        summary.slices_total += len(lost)
        _add_lost(summary, lost)
        status = run_status(summary)
    finally:
        await _settle(rt, run_id, status, summary, finish)
        RUNS.labels(kind, status).inc()
        RUN_DURATION.labels(kind, status).observe(rt.clock.monotonic() - started)
    log.info(
        "run_finished", run_id=run_id, status=status, slices_done=summary.slices_done,
        slices_failed=summary.slices_failed, rows=summary.rows_written,
    )
    return summary


def _add_lost(summary: RunSummary, lost: Sequence[tuple[str, str]]) -> None:
    """The slices that could not be planned count as failed, with their reasons first."""
    summary.slices_failed += len(lost)
    summary.failures[:0] = list(lost)


async def snapshots(
    rt: Runtime, units: Sequence[FetchUnit], lost: Sequence[tuple[str, str]] = (), *,
    stop: anyio.Event | None = None, guard: ShardGuard | None = None,
) -> RunSummary:
    """A live round: its snapshots collected and stored like any slice, without a run
    record (``collected_slices`` and ``collection_gaps`` say what was and was not taken);
    what failed is logged."""
    summary = await run_collection(units, source=rt.source, sink=rt.store, limiters=rt.limiters, clock=rt.clock,
                                   opts=rt.pipeline, run_id=None, stop=stop, guard=guard)
    _add_lost(summary, lost)
    if summary.failures:
        log.warning("snapshots_failed", slices=summary.slices_failed, first=summary.failures[0][0],
                    reason=summary.failures[0][1])
    return summary


async def collect(
    rt: Runtime,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    requested_by: str = "cli",
    profile: str = DEFAULT_PROFILE,
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    on_planned: Callable[[int], None] | None = None,
    run_id: int | None = None,
    clip: bool = False,
) -> tuple[int, RunSummary]:
    """Plan (refusing bad input before any call), record a run, collect, finish the run.

    ``clip`` (a run accepted earlier, that waited in the queue or was interrupted): a start
    that has aged out of the lookback since is moved up, and the slices before it that
    were never collected are recorded as gaps and fail with the reason."""
    # Check the range before anything is discovered, so bad input costs no call.
    asked = start
    if clip and profile in rt.apis:
        start = clip_start(rt.api(profile), start, end, rt.clock.now(),
                           rt.settings.scheduler.seconds("lookback_margin"))
    if start < end:
        check_collection(rt.settings, rt.apis, start, end, instances, rt.clock.now(), profile)
    else:  # every slice aged out: nothing to plan, only gaps to record
        select_instances(rt.settings, instances)
    api = rt.api(profile)
    res = await resolve(rt, instances, needs=api.needs)
    found = {t.instance_id for t in res.targets} | {i for i, _r in res.failed_instances}
    if not res.failed_scopes:  # every account was listed: an id asked for and not found fails visibly
        res.failed_instances += [(i, "not found: no configured instance or account's ACTIVE instance has this id")
                                 for i in dict.fromkeys(instances) if i not in found]
    units, lost = planned(rt, api, res, start, end) if start < end else ([], list(res.failed_scopes))
    lost = await aged_out(rt, api, res, asked, start) + lost
    total = slices_in(units, lost)
    names = [t.instance_id for t in res.targets] + [i for i, _r in res.failed_instances]
    if run_id is None:
        run_id = await rt.store.create_run(requested_by, profile, start, end, names, total)
    else:
        await rt.store.start_run(run_id, total, names)
    if on_planned is not None:
        on_planned(total)
    log.info("run_started", run_id=run_id, slices=total, units=len(units), instances=len(res.targets))
    summary = await execute(
        rt, units, run_id=run_id, lost=lost,
        progress=progress, stop=stop, kind="oneoff" if requested_by != "scheduler" else "scheduled",
    )
    return run_id, summary


async def collect_part(
    rt: Runtime, part: PartRecord, generation: int, stop: anyio.Event | None = None,
    guard: ShardGuard | None = None,
) -> str | None:
    """One (account, Region) part of a one-off run, on the replica holding that shard.
    Returns the run's final status when this was its last part. A part cut short (a
    stop, its shard handed over) goes back to the queue for whichever replica holds the shard."""
    run, shard = part.run, part.shard
    replica = rt.store.replica
    assert run.range_start is not None and run.range_end is not None  # one-off runs have a range
    assert replica is not None  # parts exist only in a cluster
    try:
        api = rt.api(run.profile)
        res = await resolve(rt, run.instances or (), owned={shard: generation}, needs=api.needs)
        start = clip_start(api, run.range_start, run.range_end, rt.clock.now(),
                           rt.settings.scheduler.seconds("lookback_margin"))
        units, lost = planned(rt, api, res, start, run.range_end) if start < run.range_end else ([], [])
        lost = await aged_out(rt, api, res, run.range_start, start) + lost
        if not await rt.store.part_started(run.id, shard, replica, slices_in(units, lost)):
            log.warning("part_not_held", run_id=run.id, shard=f"{shard[0]}/{shard[1]}")
            return None
    except errors.StorageError as e:
        # The database went away as the part started: not the part's fault. It goes back
        # to the queue (its counts start afresh when it starts again).
        log.warning("part_start_failed", run_id=run.id, shard=f"{shard[0]}/{shard[1]}", error=str(e))
        await _requeue(rt, run.id, shard)
        return None
    except errors.CollectorError as e:
        return await rt.store.finish_part(
            run.id, shard, replica, "failed", failed_summary(str(e), f"account {shard[0]}/{shard[1]}")
        )
    final: list[str | None] = [None]

    async def finish(status: str, summary: RunSummary) -> None:
        # Cut short, handed over, or fenced (the lease moved on: it expired while a write
        # waited out the database at shutdown, or another replica took the shard over):
        # the part is not this replica's to end. Back to the queue, if it still holds it.
        if status == "interrupted" or summary.handed_over or summary.fenced:
            await rt.store.requeue_part(run.id, shard, replica, summary)
            log.info("part_requeued", run_id=run.id, shard=f"{shard[0]}/{shard[1]}")
            return
        final[0] = await rt.store.finish_part(run.id, shard, replica, part_status(status), summary)

    await execute(rt, units, run_id=run.id, lost=lost, stop=stop, kind="oneoff", finish=finish, guard=guard)
    return final[0]
