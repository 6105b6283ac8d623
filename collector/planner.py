"""Config + time range -> slices and GetMetricData requests.

Every limit of the API is checked here, before any request leaves:
:func:`check_request` runs on each request again right before it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from collector import catalog
from collector.config import CollectionSettings
from collector.errors import PlanError
from collector.model import MetricDataRequest, MetricRequest, MetricSet, SliceKey, SliceWork, Target

DEFAULT_PROFILE = "default"


def _epoch(t: datetime, field: str = "body") -> int:
    if t.tzinfo is None:
        raise PlanError(f"{t.isoformat()} has no time zone; give an offset such as Z or +00:00", field=field)
    return int(t.timestamp())


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slices(start: datetime, end: datetime, granularity: int, now: datetime) -> list[tuple[datetime, datetime]]:
    """Tile [start, end) with slices of ``granularity`` seconds; refuse what the API cannot serve."""
    s, e, n = _epoch(start, "start"), _epoch(end, "end"), _epoch(now)
    if granularity <= 0 or granularity % catalog.SLICE_ALIGN_SECONDS:
        raise PlanError(f"granularity {granularity}s is not a multiple of 5 minutes")
    if granularity >= catalog.MAX_RANGE_SECONDS:
        raise PlanError(f"granularity {granularity}s is not under 24 hours")
    if e <= s:
        raise PlanError(f"end {fmt(end)} is not after start {fmt(start)}", field="end")
    for label, t in (("start", s), ("end", e)):
        if t % granularity:
            raise PlanError(
                f"{label} {fmt(datetime.fromtimestamp(t, UTC))} is not on a {granularity // 60}-minute slice boundary",
                field=label,
            )
    if e > n:
        raise PlanError(f"end {fmt(end)} is in the future (now {fmt(now)})", field="end")
    if s < n - catalog.LOOKBACK_SECONDS:
        raise PlanError(
            f"start {fmt(start)} is more than 24 hours ago (now {fmt(now)}); "
            "GetMetricData keeps 24 hours of data",
            field="start",
        )
    return [
        (datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(min(t + granularity, e), UTC))
        for t in range(s, e, granularity)
    ]


def metric_chunks(names: Sequence[str], service_levels: Sequence[int]) -> list[MetricSet]:
    """The metric lists of the requests for one slice: at most 20 SERVICE_LEVELs each."""
    plain = [
        MetricRequest(n, catalog.METRICS[n].unit, catalog.METRICS[n].statistic)
        for n in names
        if n != catalog.SERVICE_LEVEL
    ]
    sl_spec = catalog.METRICS[catalog.SERVICE_LEVEL]
    sls = (
        [MetricRequest(sl_spec.name, sl_spec.unit, sl_spec.statistic, float(t)) for t in service_levels]
        if catalog.SERVICE_LEVEL in names
        else []
    )
    size = catalog.MAX_SERVICE_LEVELS_PER_REQUEST
    chunks: list[MetricSet] = [tuple(plain + sls[:size])]
    for i in range(size, len(sls), size):
        chunks.append(tuple(sls[i : i + size]))
    return [c for c in chunks if c]


def _batches(items: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), size):
        yield tuple(items[i : i + size])


def plan(
    targets: Iterable[Target],
    collection: CollectionSettings,
    start: datetime,
    end: datetime,
    now: datetime,
    profile: str = DEFAULT_PROFILE,
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
        batches = list(_batches(queues, qmax))
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
                for batch in batches
                for chunk in chunks
            )
            for r in reqs:
                check_request(r, now)
            out.append(SliceWork(SliceKey(profile, target.instance_id, s, e), target, reqs))
    return out


def check_request(req: MetricDataRequest, now: datetime) -> None:
    """Raise :class:`PlanError` naming the first API limit this request breaks."""
    s, e, n = _epoch(req.start), _epoch(req.end), _epoch(now)
    if not req.instance_id or len(req.instance_id) > 100:
        raise PlanError("InstanceId must be 1-100 characters")
    if s % catalog.SLICE_ALIGN_SECONDS or e % catalog.SLICE_ALIGN_SECONDS:
        raise PlanError("StartTime and EndTime must be multiples of 5 minutes")
    if e <= s:
        raise PlanError("EndTime must be later than StartTime")
    if e - s >= catalog.MAX_RANGE_SECONDS:
        raise PlanError("the time range must be less than 24 hours")
    if s < n - catalog.LOOKBACK_SECONDS:
        raise PlanError(f"StartTime {fmt(req.start)} is earlier than 24 hours before now ({fmt(now)})")
    if not req.filters:
        raise PlanError("Filters is required")
    for key, values in req.filters.items():
        if key in catalog.V1_UNSUPPORTED_FILTERS:
            raise PlanError(f"{key} is not a valid filter for GetMetricData")
        if key not in catalog.FILTER_LIMITS:
            raise PlanError(f"unknown filter {key}")
        lo, hi = catalog.FILTER_LIMITS[key]
        if not lo <= len(values) <= hi:
            raise PlanError(f"Filters.{key} takes {lo}-{hi} values, {len(values)} given")
        if key == "Channels":
            for c in values:
                if c not in catalog.CHANNELS:
                    raise PlanError(f"channel {c} is not supported by GetMetricData (VOICE, CHAT, TASK)")
    if len(req.groupings) > catalog.MAX_GROUPINGS:
        raise PlanError(f"at most {catalog.MAX_GROUPINGS} groupings, {len(req.groupings)} given")
    for g in req.groupings:
        if g not in catalog.GROUPINGS or g in catalog.V1_UNSUPPORTED_GROUPINGS:
            raise PlanError(f"grouping {g} is not valid for GetMetricData")
    if len(set(req.groupings)) != len(req.groupings):
        raise PlanError("a grouping is repeated")
    if not req.metrics:
        raise PlanError("HistoricalMetrics is required")
    seen: set[tuple[str, float | None]] = set()
    n_sl = 0
    for m in req.metrics:
        spec = catalog.METRICS.get(m.name)
        if spec is None:
            raise PlanError(f"unknown metric {m.name}")
        if (m.unit, m.statistic) != (spec.unit, spec.statistic):
            raise PlanError(
                f"{m.name} takes Unit {spec.unit} and Statistic {spec.statistic}, not {m.unit}/{m.statistic}"
            )
        if m.name == catalog.SERVICE_LEVEL:
            n_sl += 1
            t = m.threshold
            if t is None or t != int(t) or not catalog.THRESHOLD_MIN <= t <= catalog.THRESHOLD_MAX:
                raise PlanError("SERVICE_LEVEL needs a whole-number threshold of 1-604800 seconds")
        elif m.threshold is not None:
            raise PlanError(f"{m.name} takes no Threshold")
        if (m.name, m.threshold) in seen:
            raise PlanError(f"{m.name} is requested twice")
        seen.add((m.name, m.threshold))
    if n_sl > catalog.MAX_SERVICE_LEVELS_PER_REQUEST:
        raise PlanError(f"at most 20 SERVICE_LEVEL metrics a request, {n_sl} given")
    if not catalog.MAX_RESULTS_MIN <= req.max_results <= catalog.MAX_RESULTS_MAX:
        raise PlanError("MaxResults must be 1-100")


def parse_time(text: str, label: str) -> datetime:
    """ISO 8601 with an offset (``2026-01-01T10:00:00Z``) -> aware datetime."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise PlanError(f"{label} {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise PlanError(f"{label} {text!r} has no time zone; add Z or an offset")
    return t.astimezone(UTC)


def floor_to(t: datetime, seconds: int) -> datetime:
    e = int(t.timestamp())
    return datetime.fromtimestamp(e - e % seconds, UTC)

