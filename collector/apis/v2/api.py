"""GetMetricDataV2 as an implementation of the metric API port
(:class:`collector.ports.MetricApi`): slices aligned to the interval in the profile's
time zone, windows of many slices per request, 90 days of history, and the resources
its ``"all"`` filters and groupings need discovered (agents, routing profiles,
hierarchy groups)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from collector.apis.v2 import catalog
from collector.apis.v2.model import V2Request
from collector.apis.v2.planner import (
    check_request,
    filter_batches,
    floor_boundary,
    fmt,
    instance_arn,
    metric_chunks,
    metric_entries,
    next_boundary,
    nominal_seconds,
    oldest_start,
    slices,
    utc,
)
from collector.apis.v2.settings import V2ProfileSettings
from collector.apis.v2.unit import V2Window
from collector.durations import parse_duration
from collector.errors import PlanErrorV2
from collector.model import ProfileInfo, ScheduleOptions, SliceKey, Target
from collector.ports import FetchUnit

log = structlog.get_logger("collector.v2")

# The API's resource filter keys and the resource kinds the fleet discovers for them.
KINDS: dict[str, str] = {
    catalog.AGENT: "agents",
    catalog.ROUTING_PROFILE: "routing_profiles",
    **{level: "hierarchy_groups" for level in catalog.HIERARCHY_LEVELS},
}
# Leeway around a local day or week: DST moves a boundary by up to two hours.
_DST = 7200


@dataclass(frozen=True, slots=True)
class ZonedCalendar:
    """Interval boundaries on the profile's local wall clock (a local day is 23 to 25 hours)."""

    interval: str
    time_zone: str

    @property
    def seconds(self) -> int:
        return nominal_seconds(self.interval)

    @property
    def lengths(self) -> tuple[int, int]:
        n = self.seconds
        return (n, n) if self.interval in catalog.INTERVAL_SECONDS else (n - _DST, n + _DST)

    def floor(self, t: datetime) -> datetime:
        return floor_boundary(t, self.interval, self.time_zone)

    def next(self, boundary: datetime) -> datetime:
        return next_boundary(boundary, self.interval, self.time_zone)


def resources_of(target: Target) -> dict[str, list[str]]:
    """API filter key -> the IDs discovered for ``target`` (queues from its resolution)."""
    out = {catalog.QUEUE: list(target.queues)}
    for key, kind in KINDS.items():
        ids = target.resource(kind)
        if ids is not None:
            out[key] = list(ids)
    return out


class V2Api:
    """One GetMetricDataV2 profile."""

    def __init__(self, settings: V2ProfileSettings) -> None:
        self.settings = settings
        self.profile = settings.name
        self.calendar = ZonedCalendar(settings.interval_period, settings.time_zone)
        # Resource filters given as lists are discovered too, so an ID that does not exist
        # in the instance is reported (a filter on it collects nothing, silently otherwise).
        wanted = set(settings.api_filters()) | set(settings.groupings)
        self.needs = frozenset(KINDS[k] for k in wanted if k in KINDS)
        self._warned: set[tuple[str, str, tuple[str, ...]]] = set()

    @property
    def info(self) -> ProfileInfo:
        s = self.settings
        return ProfileInfo("v2", s.interval, self.calendar.seconds, s.interval_period, s.time_zone)

    @property
    def lookback(self) -> int:
        return catalog.LOOKBACK_SECONDS

    @property
    def initial_backfill(self) -> int | None:
        b = self.settings.initial_backfill
        return None if b is None else parse_duration(b)

    def schedule(self, opts: ScheduleOptions) -> ScheduleOptions:
        return opts

    def check_range(self, start: datetime, end: datetime, now: datetime, margin: int) -> None:
        plan([], self.settings, start, end, now, {}, margin)

    def plan(self, target: Target, start: datetime, end: datetime, now: datetime, margin: int) -> list[FetchUnit]:
        for key, kind in KINDS.items():
            if self.settings.api_filters().get(key) == "all" and target.resource(kind) is None:
                why = dict(target.missing).get(kind)
                if why is not None:
                    raise PlanErrorV2(f"instance {target.instance_id}: {kind} discovery failed: {why}")
        self._warn_unknown(target)
        return list(plan([target], self.settings, start, end, now, {target.instance_id: resources_of(target)},
                         margin))

    def _warn_unknown(self, target: Target) -> None:
        """A listed filter ID the instance does not have (discovered IDs or ARNs): warned
        once per instance, filter and IDs."""
        for key, values in self.settings.api_filters().items():
            kind = KINDS.get(key)
            found = target.resource(kind) if kind is not None else None
            if not isinstance(values, list) or found is None:
                continue
            unknown = tuple(v for v in values if v not in found and v.rsplit("/", 1)[-1] not in found)
            if unknown and (target.instance_id, key, unknown) not in self._warned:
                self._warned.add((target.instance_id, key, unknown))
                log.warning("filter_ids_unknown", profile=self.profile, instance=target.instance_id,
                            filter=key, ids=list(unknown),
                            hint=f"no {kind} with these IDs in the instance; the filter collects nothing for them")


def plan(
    targets: Iterable[Target],
    profile: V2ProfileSettings,
    start: datetime,
    end: datetime,
    now: datetime,
    resources: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    lookback_margin: int = 0,
) -> list[V2Window]:
    """Every window of every target, with the requests that collect its slices whole.

    ``resources``: per instance, the discovered IDs for filters given as ``"all"``
    (``{"<instance id>": {"QUEUE": [...], "AGENT": [...]}}``)."""
    interval, tz = profile.interval_period, profile.time_zone
    n = utc(now)
    oldest = oldest_start(n, interval, tz, lookback_margin)
    s0, e0 = utc(start, "start"), utc(end, "end")
    if e0 > s0:  # refuse a range outside the lookback before tiling it (year 1: millions of slices)
        if s0 < oldest:
            raise PlanErrorV2(
                f"start {fmt(s0)} is more than 90 days ago (the earliest {interval} slice "
                f"still served with a {lookback_margin}s margin starts {fmt(oldest)}); GetMetricDataV2 keeps 3 months",
                field="start",
            )
        if e0 > n:
            raise PlanErrorV2(f"end {fmt(e0)} is in the future (now {fmt(n)})", field="end")
    spans = slices(start, end, interval, tz)
    limit = catalog.MAX_RANGE_SECONDS[interval]
    runs: list[list[tuple[datetime, datetime]]] = [[]]
    for s, e in spans:
        if runs[-1] and (e - runs[-1][0][0]).total_seconds() >= limit:
            runs.append([])
        runs[-1].append((s, e))
    chunks = metric_chunks(metric_entries(profile))
    groupings = tuple(profile.groupings)
    out: list[V2Window] = []
    for target in targets:
        arn = instance_arn(target)
        found = (resources or {}).get(target.instance_id, {})
        filters: dict[str, Sequence[str]] = {}
        for key, values in profile.api_filters().items():
            if values == "all":
                if key not in found:
                    raise PlanErrorV2(f"instance {target.instance_id}: filter {key} = \"all\" is not discovered yet")
                filters[key] = list(found[key])
            else:
                filters[key] = list(values)
        batches = filter_batches(filters, groupings, f"instance {target.instance_id}: ")
        for run in runs:
            ws, we = run[0][0], run[-1][1]
            reqs = tuple(
                V2Request(arn, ws, we, interval, tz, batch, groupings, chunk, profile.max_results)
                for batch in batches
                for chunk in chunks
            )
            for r in reqs:
                check_request(r, n)
            keys = tuple(SliceKey(profile.name, target.instance_id, s, e) for s, e in run)
            out.append(V2Window(target, profile.name, keys, reqs))
    return out
