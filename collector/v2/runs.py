"""A V2 run's life, beside v1's (:mod:`collector.runs` calls in here for a V2 profile):
check (any start within 90 days), resolve instances, discover the resources the
profile filters on, plan windows, and execute them through the pipeline (each window a
unit of fetch work, its slices written in one batch by ``PgStoreV2``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import anyio
import structlog

from collector import errors
from collector.config import InstanceSettings, Settings
from collector.fleet import Resolution, resolve, select_instances
from collector.model import RunSummary, SliceKey, Target
from collector.pipeline import Progress
from collector.ports import Runtime
from collector.v2.fleet import ResourceCache, Resources, needs
from collector.v2.planner import plan, slices
from collector.v2.ports import V2Ports, V2Store
from collector.v2.settings import V2ProfileSettings
from collector.v2.work import WindowUnit

log = structlog.get_logger("collector.v2.runs")

Lost = list[tuple[str, str]]


def v2_profile(settings: Settings, name: str) -> V2ProfileSettings | None:
    """The V2 profile called ``name``, or None (a v1 profile, or none)."""
    return next((p for p in settings.v2_profiles() if p.name == name), None)


def margin(settings: Settings) -> int:
    return settings.scheduler.seconds("lookback_margin")


def check_collection(
    settings: Settings, profile: V2ProfileSettings, start: datetime, end: datetime,
    instances: Sequence[str], now: datetime,
) -> list[InstanceSettings]:
    """Refuse a V2 collection that cannot be served (boundaries, 90 days, not in the
    future), before any call or connection."""
    plan([], profile, start, end, now, {}, margin(settings))
    return select_instances(settings, instances)


def ports_of(rt: Runtime) -> V2Ports:
    if rt.v2 is None:
        raise errors.ConfigError("this Connect source does not speak GetMetricDataV2", field="profile")
    return rt.v2


async def planned(
    rt: Runtime, ports: V2Ports, res: Resolution, profile: V2ProfileSettings, start: datetime, end: datetime,
    cache: ResourceCache | None = None,
) -> tuple[list[WindowUnit], Lost]:
    """The windows to collect, and failures standing for the slices that cannot be."""
    cache = cache or ResourceCache(rt, ports, 0.0)
    found, failed = await cache.resolve(res.targets, needs([profile]))
    now = rt.clock.now()
    units, lost_instances = plan_targets(res.targets, found, profile, start, end, now, margin(rt.settings), ports)
    lost_instances += failed + res.failed_instances
    lost: Lost = [
        (str(SliceKey(profile.name, iid, s, e)), reason)
        for iid, reason in lost_instances
        for s, e in slices(start, end, profile.interval_period, profile.time_zone)
    ]
    return units, lost + list(res.failed_scopes)


def plan_targets(
    targets: Sequence[Target], found: dict[str, Resources], profile: V2ProfileSettings,
    start: datetime, end: datetime, now: datetime, margin_s: int, ports: V2Ports,
) -> tuple[list[WindowUnit], Lost]:
    """Plan each target on its own, so an instance that cannot be planned (nothing
    discovered for an ``"all"`` filter) fails only its own slices."""
    units: list[WindowUnit] = []
    lost: Lost = []
    for t in targets:
        if t.instance_id not in found:
            continue  # discovery failed: in the caller's failures
        try:
            windows = plan([t], profile, start, end, now, found, margin_s)
        except errors.PlanError as e:
            lost.append((t.instance_id, str(e)))
            continue
        units += [WindowUnit(w, ports.source) for w in windows]
    return units, lost


async def collect(
    rt: Runtime,
    profile: V2ProfileSettings,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    requested_by: str = "cli",
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    on_planned: Callable[[int], None] | None = None,
    run_id: int | None = None,
) -> tuple[int, RunSummary]:
    """As :func:`collector.runs.collect`, for a V2 profile."""
    from collector.runs import execute

    check_collection(rt.settings, profile, start, end, instances, rt.clock.now())
    ports = ports_of(rt)
    res = await resolve(rt, instances)
    units, lost = await planned(rt, ports, res, profile, start, end)
    total = sum(len(u.slice_keys) for u in units) + len(lost)
    names = [t.instance_id for t in res.targets] + [i for i, _r in res.failed_instances]
    if run_id is None:
        run_id = await rt.store.create_run(requested_by, profile.name, start, end, names, total)
    else:
        await rt.store.start_run(run_id, total, names)
    if on_planned is not None:
        on_planned(total)
    log.info("run_started", run_id=run_id, windows=len(units), slices=total, instances=len(res.targets))
    summary = await execute(
        rt, units, run_id=run_id, lost=lost, progress=progress, stop=stop,
        kind="oneoff" if requested_by != "scheduler" else "scheduled", sink=ports.store,
    )
    return run_id, summary


async def plan_part(
    rt: Runtime, profile: V2ProfileSettings, res: Resolution, start: datetime, end: datetime,
) -> tuple[list[WindowUnit], Lost, V2Store]:
    """The windows of one (account, Region) part of a one-off V2 run, and the store they
    are written to (:func:`collector.runs.collect_part` runs the part's life)."""
    ports = ports_of(rt)
    units, lost = await planned(rt, ports, res, profile, start, end)
    return units, lost, ports.store
