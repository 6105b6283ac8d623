"""GetMetricData's slices and limits: a range tiled into slices, the metric lists of a
slice's requests, and every limit of the API (:func:`check_request` runs on each planned
request, and again right before it is sent)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

from collector.apis.v1 import catalog
from collector.apis.v1.model import MetricDataRequest, MetricRequest, MetricSet
from collector.errors import PlanError
from collector.validation import in_utc


def _epoch(t: datetime, field: str = "body") -> int:
    try:
        return int(in_utc(t, field).timestamp())
    except ValueError as e:
        raise PlanError(str(e), field=field) from None


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


def batches(items: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), size):
        yield tuple(items[i : i + size])


def check_request(req: MetricDataRequest, now: datetime) -> None:
    """Raise :class:`PlanError` naming the first API limit this request breaks."""
    s, e, n = _epoch(req.start), _epoch(req.end), _epoch(now)
    if not req.instance_id or len(req.instance_id) > 100:
        raise PlanError("InstanceId must be 1-100 characters")
    _check_range(s, e, n, req.start, now)
    _check_filters(req.filters)
    _check_groupings(req.groupings)
    _check_metrics(req.metrics)
    if not catalog.MAX_RESULTS_MIN <= req.max_results <= catalog.MAX_RESULTS_MAX:
        raise PlanError("MaxResults must be 1-100")


def _check_range(s: int, e: int, n: int, start: datetime, now: datetime) -> None:
    """StartTime ``s`` and EndTime ``e`` (epoch seconds; ``n`` is now): on 5-minute
    marks, in order, less than 24 hours apart, and within the 24-hour lookback."""
    if s % catalog.SLICE_ALIGN_SECONDS or e % catalog.SLICE_ALIGN_SECONDS:
        raise PlanError("StartTime and EndTime must be multiples of 5 minutes")
    if e <= s:
        raise PlanError("EndTime must be later than StartTime")
    if e - s >= catalog.MAX_RANGE_SECONDS:
        raise PlanError("the time range must be less than 24 hours")
    if s < n - catalog.LOOKBACK_SECONDS:
        raise PlanError(f"StartTime {fmt(start)} is earlier than 24 hours before now ({fmt(now)})")


def _check_filters(filters: Mapping[str, Sequence[str]]) -> None:
    """Filters: present, each key one GetMetricData takes, with its number of values,
    and only the channels GetMetricData serves."""
    if not filters:
        raise PlanError("Filters is required")
    for key, values in filters.items():
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


def _check_groupings(groupings: Sequence[str]) -> None:
    """Groupings: at most two, each valid for GetMetricData, none repeated."""
    if len(groupings) > catalog.MAX_GROUPINGS:
        raise PlanError(f"at most {catalog.MAX_GROUPINGS} groupings, {len(groupings)} given")
    for g in groupings:
        if g not in catalog.GROUPINGS or g in catalog.V1_UNSUPPORTED_GROUPINGS:
            raise PlanError(f"grouping {g} is not valid for GetMetricData")
    if len(set(groupings)) != len(groupings):
        raise PlanError("a grouping is repeated")


def _check_metrics(metrics: MetricSet) -> None:
    """HistoricalMetrics: present, each entry valid, none twice, at most 20 SERVICE_LEVELs."""
    if not metrics:
        raise PlanError("HistoricalMetrics is required")
    seen: set[tuple[str, float | None]] = set()
    n_sl = 0
    for m in metrics:
        _check_metric(m)
        if m.name == catalog.SERVICE_LEVEL:
            n_sl += 1
        if (m.name, m.threshold) in seen:
            raise PlanError(f"{m.name} is requested twice")
        seen.add((m.name, m.threshold))
    if n_sl > catalog.MAX_SERVICE_LEVELS_PER_REQUEST:
        raise PlanError(f"at most 20 SERVICE_LEVEL metrics a request, {n_sl} given")


def _check_metric(m: MetricRequest) -> None:
    """One HistoricalMetrics entry: a known metric with its Unit and Statistic, and a
    whole-number threshold if (and only if) it is SERVICE_LEVEL."""
    spec = catalog.METRICS.get(m.name)
    if spec is None:
        raise PlanError(f"unknown metric {m.name}")
    if (m.unit, m.statistic) != (spec.unit, spec.statistic):
        raise PlanError(
            f"{m.name} takes Unit {spec.unit} and Statistic {spec.statistic}, not {m.unit}/{m.statistic}"
        )
    if m.name == catalog.SERVICE_LEVEL:
        t = m.threshold
        if t is None or t != int(t) or not catalog.THRESHOLD_MIN <= t <= catalog.THRESHOLD_MAX:
            raise PlanError("SERVICE_LEVEL needs a whole-number threshold of 1-604800 seconds")
    elif m.threshold is not None:
        raise PlanError(f"{m.name} takes no Threshold")


def parse_time(text: str, label: str) -> datetime:
    """ISO 8601 with an offset (``2026-01-01T10:00:00Z``) -> aware datetime."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise PlanError(f"{label} {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise PlanError(f"{label} {text!r} has no time zone; add Z or an offset")
    try:
        return in_utc(t, label)
    except ValueError as e:
        raise PlanError(str(e), field=label.lstrip("-")) from None


def floor_to(t: datetime, seconds: int) -> datetime:
    e = int(t.timestamp())
    return datetime.fromtimestamp(e - e % seconds, UTC)

