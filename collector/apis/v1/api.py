"""GetMetricData (v1) as an implementation of the metric API port
(:class:`collector.ports.MetricApi`): UTC slices of the profile's granularity, one
fetch unit per slice, 24 hours of history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from collector.apis.v1 import catalog
from collector.apis.v1.model import MetricDataRequest
from collector.apis.v1.planner import batches, check_request, metric_chunks, slices
from collector.apis.v1.settings import CollectionSettings
from collector.apis.v1.unit import SliceWork
from collector.calendar import UtcCalendar
from collector.errors import PlanError
from collector.model import ProfileInfo, ScheduleOptions, SliceKey, Target
from collector.ports import FetchUnit


class V1Api:
    """One GetMetricData profile."""

    def __init__(self, profile: str, settings: CollectionSettings) -> None:
        self.profile = profile
        self.settings = settings
        self.calendar = UtcCalendar(settings.granularity_seconds)

    @property
    def info(self) -> ProfileInfo:
        return ProfileInfo("v1", self.settings.granularity, self.calendar.seconds, None, "UTC")

    @property
    def lookback(self) -> int:
        return catalog.LOOKBACK_SECONDS

    @property
    def initial_backfill(self) -> int | None:
        return None

    def schedule(self, opts: ScheduleOptions) -> ScheduleOptions:
        return opts

    @property
    def needs(self) -> frozenset[str]:
        return frozenset()

    def check_range(self, start: datetime, end: datetime, now: datetime, margin: int) -> None:
        slices(start, end, self.settings.granularity_seconds, now)

    def plan(self, target: Target, start: datetime, end: datetime, now: datetime, margin: int) -> list[FetchUnit]:
        return list(plan([target], self.settings, start, end, now, self.profile))


def plan(
    targets: Iterable[Target],
    collection: CollectionSettings,
    start: datetime,
    end: datetime,
    now: datetime,
    profile: str = "default",
) -> list[SliceWork]:
    """Every slice of every target, with the requests that collect it whole."""
    spans = slices(start, end, collection.granularity_seconds, now)
    chunks = metric_chunks(collection.metric_names(), collection.service_levels)
    groupings = tuple(collection.groupings)
    extra_filters: dict[str, tuple[str, ...]] = {"Channels": tuple(collection.channels)}
    for key, values in (
        ("RoutingProfiles", collection.routing_profiles),
        ("AgentStatuses", collection.agent_statuses),
        ("Subtypes", collection.subtypes),
        ("ValidationTestTypes", collection.validation_test_types),
    ):
        if values:
            extra_filters[key] = tuple(values)
    qmax = catalog.FILTER_LIMITS["Queues"][1]
    out: list[SliceWork] = []
    for target in targets:
        queues = list(dict.fromkeys(target.queues))
        if not queues:
            raise PlanError(f"instance {target.instance_id} has no queues to collect")
        if "QUEUE" not in groupings and len(queues) > qmax:
            raise PlanError(
                f"instance {target.instance_id} has {len(queues)} queues and the groupings "
                f"{list(groupings)} do not include QUEUE: GetMetricData takes 100 queues a request "
                "and its values per group cannot be combined across requests; group by QUEUE "
                "or list at most 100 queues"
            )
        batches_ = list(batches(queues, qmax))
        for s, e in spans:
            reqs = tuple(
                MetricDataRequest(
                    instance_id=target.instance_id,
                    start=s,
                    end=e,
                    filters={"Queues": batch, **extra_filters},
                    groupings=groupings,
                    metrics=chunk,
                    max_results=collection.max_results,
                )
                for batch in batches_
                for chunk in chunks
            )
            for r in reqs:
                check_request(r, now)
            out.append(SliceWork(SliceKey(profile, target.instance_id, s, e), target, reqs))
    return out
