"""The real-time APIs as implementations of the metric API port
(:class:`collector.ports.MetricApi`): a slice is one period (``every``) of one instance,
its snapshot taken during it and stamped with the API's snapshot time; it is due at its
start, never revisited, and a period that passes without a snapshot is a gap. Live
profiles run on their own scheduler loop, so a long catch-up never delays a snapshot,
and their rounds record no run (``collected_slices`` and ``collection_gaps`` say what
was and was not taken)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from collector.apis.current import catalog
from collector.apis.current.model import CurrentRequest, UserDataRequest
from collector.apis.current.planner import batches, check_current, check_user_data
from collector.apis.current.settings import (
    CURRENT_FILTERS,
    USER_FILTERS,
    AgentsProfileSettings,
    CurrentProfileSettings,
)
from collector.apis.current.unit import AgentSnapshot, QueueSnapshot
from collector.calendar import UtcCalendar, tile
from collector.errors import PlanErrorLive as PlanError
from collector.model import ProfileInfo, ScheduleOptions, SliceKey, Target
from collector.ports import FetchUnit

# [profiles.filters] key -> the resource kind discovered for "all" (queues: the target's own)
_KINDS = {"routing_profiles": "routing_profiles", "agents": "agents"}


class _LiveApi:
    """What both real-time APIs share: the period calendar and the live schedule."""

    api = ""

    def __init__(self, settings: CurrentProfileSettings | AgentsProfileSettings) -> None:
        self.settings = settings
        self.profile = settings.name
        self.calendar = UtcCalendar(settings.every_seconds)
        self.needs = frozenset(_KINDS[k] for k, v in settings.filters.items() if v == "all" and k in _KINDS)
        if isinstance(settings, AgentsProfileSettings):  # agent_now and the intervals name them
            self.needs |= {"agents"}

    @property
    def info(self) -> ProfileInfo:
        return ProfileInfo(self.api, self.settings.every, self.calendar.seconds, None, "UTC")

    @property
    def lookback(self) -> int:
        return self.calendar.seconds  # only now is served

    @property
    def initial_backfill(self) -> int | None:
        return self.calendar.seconds  # the period under way

    def schedule(self, opts: ScheduleOptions) -> ScheduleOptions:
        every = self.calendar.seconds
        return dataclasses.replace(opts, settle=-every, revisits=(), initial_backfill=every, catchup_batch=1,
                                   lookback_margin=1, retry_after=0, loop="live", runs=False)

    def check_range(self, start: datetime, end: datetime, now: datetime, margin: int) -> None:
        raise PlanError(f"profile {self.profile!r} is real time ({self.api}): it is polled by `collector serve` "
                        "every period and cannot collect a past range", field="profile")

    def _ids(self, target: Target, key: str) -> list[str]:
        values = self.settings.filters[key]
        if values != "all":
            return list(values)
        if key == "queues":
            return list(dict.fromkeys(target.queues))
        found = target.resource(_KINDS[key])
        if found is None:
            why = dict(target.missing).get(_KINDS[key], "not discovered yet")
            raise PlanError(f"instance {target.instance_id}: {_KINDS[key]} discovery failed: {why}")
        return list(found)

    def _spans(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        return tile(self.calendar, self.calendar.floor(start), end)


class CurrentApi(_LiveApi):
    """One GetCurrentMetricData profile: queue gauges."""

    api = "current"
    settings: CurrentProfileSettings

    def plan(self, target: Target, start: datetime, end: datetime, now: datetime, margin: int) -> list[FetchUnit]:
        s = self.settings
        primary = "queues" if "queues" in s.filters else "routing_profiles"
        ids = self._ids(target, primary)
        if not ids:
            raise PlanError(f"instance {target.instance_id} has no {primary.replace('_', ' ')} to poll")
        grouped_by_primary = (catalog.QUEUE if primary == "queues" else catalog.ROUTING_PROFILE) in s.groupings
        if len(ids) > 100 and not grouped_by_primary:
            raise PlanError(
                f"instance {target.instance_id} has {len(ids)} {primary.replace('_', ' ')} and the groupings "
                f"{s.groupings} do not include {primary[:-1].upper()}: a request takes 100 and its values cannot "
                "be combined across requests")
        rest = {CURRENT_FILTERS[k]: tuple(v) for k, v in s.filters.items() if k != primary and v != "all"}
        metrics = tuple((m, catalog.METRICS[m]) for m in s.metrics)
        reqs = tuple(CurrentRequest(target.instance_id, {CURRENT_FILTERS[primary]: b, **rest}, tuple(s.groupings),
                                    metrics, s.max_results) for b in batches(ids, 100))
        for r in reqs:
            check_current(r)
        return [QueueSnapshot(SliceKey(self.profile, target.instance_id, a, b), target, reqs)
                for a, b in self._spans(start, end)]


class AgentsApi(_LiveApi):
    """One GetCurrentUserData profile: every agent's state."""

    api = "agents"
    settings: AgentsProfileSettings

    def plan(self, target: Target, start: datetime, end: datetime, now: datetime, margin: int) -> list[FetchUnit]:
        s = self.settings
        (key,) = s.filters
        ids = self._ids(target, key)
        if not ids:
            return [AgentSnapshot(SliceKey(self.profile, target.instance_id, a, b), target, ())
                    for a, b in self._spans(start, end)]
        per = catalog.USER_FILTER_LIMITS[USER_FILTERS[key]]
        reqs = tuple(UserDataRequest(target.instance_id, {USER_FILTERS[key]: b}, tuple(s.contact_states),
                                     s.max_results) for b in batches(ids, per))
        for r in reqs:
            check_user_data(r)
        return [AgentSnapshot(SliceKey(self.profile, target.instance_id, a, b), target, reqs)
                for a, b in self._spans(start, end)]
