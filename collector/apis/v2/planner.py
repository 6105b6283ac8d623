"""GetMetricDataV2's calendar, request building and limits (pure: no I/O). Every
limit of GetMetricDataV2 is checked before a request leaves (:func:`check_request`
runs on each planned request, and again right before it is sent):

- slices are aligned to the interval in the profile's time zone: 15m/30m/1h on
  local wall-clock boundaries, 1d on local midnight, 1w on local midnight of
  Monday (so a DST day is 23 or 25 hours);
- a request covers as many whole slices as the range limit allows (strictly
  less than 3 days for FIFTEEN_MIN/THIRTY_MIN/HOUR, 35 days for DAY/WEEK);
- start within the 90-day lookback (minus a margin), end not in the future;
- 1-5 filter keys, at least one of QUEUE/ROUTING_PROFILE/AGENT/AGENT_HIERARCHY_LEVEL_*,
  at most 100 filter values across keys (CHANNEL values do not count): larger
  resource lists are batched, and a batched key must be grouped so the batches'
  results are disjoint groups (values per group cannot be combined across requests);
- at most 4 groupings, each valid for every metric; at most 1 threshold per
  metric entry; at most 2 metric filters of at most 10 values; at most 20
  SERVICE_LEVEL entries a request (larger sets are split); MaxResults 1-100.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from collector.apis.v2 import catalog
from collector.apis.v2.model import MetricFilterV2, MetricSetV2, MetricV2, V2Request
from collector.apis.v2.settings import V2ProfileSettings
from collector.errors import PlanErrorV2
from collector.model import Target
from collector.validation import in_utc


def utc(t: datetime, field: str = "body") -> datetime:
    try:
        return in_utc(t, field)
    except ValueError as e:
        raise PlanErrorV2(str(e), field=field) from None


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- slices ---------------------------------------------------------------------------
def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tz).astimezone(UTC)


def floor_boundary(t: datetime, interval: str, time_zone: str) -> datetime:
    """The latest slice boundary at or before ``t``."""
    t = utc(t)
    tz = ZoneInfo(time_zone)
    if interval in catalog.INTERVAL_SECONDS:
        p = catalog.INTERVAL_SECONDS[interval]
        local = t.astimezone(tz)
        off = int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
        epoch = int(t.timestamp())
        return datetime.fromtimestamp(epoch - (epoch + off) % p, UTC)
    d = t.astimezone(tz).date()
    if interval == "WEEK":
        d -= timedelta(days=d.weekday())
    elif interval != "DAY":
        raise PlanErrorV2(f"interval {interval} is not collected (FIFTEEN_MIN, THIRTY_MIN, HOUR, DAY, WEEK)")
    b = _local_midnight(d, tz)
    if b > t:  # a local midnight that DST skipped lands after t
        b = _local_midnight(d - timedelta(days=7 if interval == "WEEK" else 1), tz)
    return b


def next_boundary(b: datetime, interval: str, time_zone: str) -> datetime:
    """The boundary after boundary ``b``."""
    if interval in catalog.INTERVAL_SECONDS:
        return b + timedelta(seconds=catalog.INTERVAL_SECONDS[interval])
    tz = ZoneInfo(time_zone)
    d = b.astimezone(tz).date() + timedelta(days=7 if interval == "WEEK" else 1)
    return _local_midnight(d, tz)


def ceil_boundary(t: datetime, interval: str, time_zone: str) -> datetime:
    b = floor_boundary(t, interval, time_zone)
    return b if b == utc(t) else next_boundary(b, interval, time_zone)


def slices(start: datetime, end: datetime, interval: str, time_zone: str) -> list[tuple[datetime, datetime]]:
    """Tile [start, end) with interval-aligned slices; both ends must be boundaries."""
    s, e = utc(start, "start"), utc(end, "end")
    if e <= s:
        raise PlanErrorV2(f"end {fmt(e)} is not after start {fmt(s)}", field="end")
    for label, t in (("start", s), ("end", e)):
        if floor_boundary(t, interval, time_zone) != t:
            raise PlanErrorV2(
                f"{label} {fmt(t)} is not on a {interval} boundary in {time_zone} "
                f"(the nearest earlier one is {fmt(floor_boundary(t, interval, time_zone))})",
                field=label,
            )
    out = []
    b = s
    while b < e:
        n = next_boundary(b, interval, time_zone)
        out.append((b, n))
        b = n
    return out


def oldest_start(now: datetime, interval: str, time_zone: str, margin: int = 0) -> datetime:
    """The earliest slice start the lookback allows, ``margin`` seconds inside it
    (as v1's scheduler keeps its ``lookback_margin``)."""
    edge = utc(now) - timedelta(seconds=catalog.LOOKBACK_SECONDS - margin)
    return ceil_boundary(edge, interval, time_zone)


def nominal_seconds(interval: str) -> int:
    """A period's nominal length (a day is 86400 even when DST makes it 23 or 25 hours):
    the key for per-profile bookkeeping such as watermarks. Stored slices carry their
    real length, so ``interval_end`` is exact."""
    return {**catalog.INTERVAL_SECONDS, "DAY": 86400, "WEEK": 7 * 86400}[interval]


def newest_end(now: datetime, interval: str, time_zone: str) -> datetime:
    return floor_boundary(now, interval, time_zone)


# -- requests ---------------------------------------------------------------------------
def metric_entries(profile: V2ProfileSettings) -> list[MetricV2]:
    """One request entry per (metric, threshold): a metric with two thresholds is two entries."""
    out: list[MetricV2] = []
    for m in profile.metric_settings():
        spec = catalog.METRICS[m.name]
        filters = tuple(MetricFilterV2(f.key, tuple(f.values), f.negate) for f in m.metric_filters)
        thresholds: list[tuple[str, float] | None] = (
            [(t.comparison, float(t.value)) for t in m.thresholds] or [None]
        )
        for thr in thresholds:
            entry = MetricV2(m.name, spec.unit, thr, filters)
            if entry not in out:
                out.append(entry)
    return out


def metric_chunks(entries: Sequence[MetricV2]) -> list[MetricSetV2]:
    """The metric lists of a window's requests: at most 20 SERVICE_LEVEL entries each."""
    plain = [m for m in entries if m.name != catalog.SERVICE_LEVEL]
    sls = [m for m in entries if m.name == catalog.SERVICE_LEVEL]
    size = catalog.MAX_SERVICE_LEVELS_PER_REQUEST
    chunks: list[MetricSetV2] = [tuple(plain + sls[:size])]
    for i in range(size, len(sls), size):
        chunks.append(tuple(sls[i : i + size]))
    return [c for c in chunks if c]


def filter_batches(
    filters: Mapping[str, Sequence[str]], groupings: Sequence[str], where: str = ""
) -> list[tuple[tuple[str, tuple[str, ...]], ...]]:
    """Split the resource filter values into requests of at most 100 values across keys.

    Small keys stay whole; the budget left is shared among the large ones. A key
    that has to be split must be grouped, else its batches' results would be sums
    over different resources that cannot be combined."""
    keys = list(filters)
    if not keys:
        raise PlanErrorV2(f"{where}GetMetricDataV2 needs at least one filter")
    if len(keys) > catalog.MAX_FILTER_KEYS:
        raise PlanErrorV2(f"{where}{len(keys)} filter keys; GetMetricDataV2 takes at most 5")
    if not catalog.RESOURCE_FILTER_KEYS & set(keys):
        raise PlanErrorV2(f"{where}needs a QUEUE, ROUTING_PROFILE, AGENT or AGENT_HIERARCHY_LEVEL_* filter")
    for k in keys:
        if not filters[k]:
            raise PlanErrorV2(f"{where}filter {k} has no values (nothing discovered?)")
    counted = sorted((k for k in keys if k not in catalog.UNCOUNTED_FILTER_KEYS), key=lambda k: len(filters[k]))
    budget = catalog.MAX_FILTER_VALUES
    if len(counted) > budget:
        raise PlanErrorV2(f"{where}more filter keys than filter values allowed")
    sizes: dict[str, int] = {}
    for i, k in enumerate(counted):
        share = budget // (len(counted) - i)
        sizes[k] = min(len(filters[k]), share)
        budget -= sizes[k]
    for k in counted:
        if sizes[k] < len(filters[k]) and k not in groupings:
            raise PlanErrorV2(
                f"{where}filter {k} has {len(filters[k])} values, more than fit in one request "
                f"({sizes[k]} with the other filters), and {k} is not among the groupings "
                f"{list(groupings)}: values per group cannot be combined across requests; "
                f"group by {k} or list fewer values"
            )
    per_key: list[list[tuple[str, tuple[str, ...]]]] = []
    for k in keys:
        vals = list(dict.fromkeys(filters[k]))
        n = sizes.get(k, len(vals))
        per_key.append([(k, tuple(vals[i : i + n])) for i in range(0, len(vals), n)])
    return [tuple(combo) for combo in itertools.product(*per_key)]


def instance_arn(target: Target) -> str:
    if target.instance_id.startswith("arn:"):
        return target.instance_id
    partition = "aws-cn" if target.region.startswith("cn-") else (
        "aws-us-gov" if target.region.startswith("us-gov-") else "aws"
    )
    return f"arn:{partition}:connect:{target.region}:{target.account}:instance/{target.instance_id}"


def check_request(req: V2Request, now: datetime) -> None:
    """Raise :class:`PlanErrorV2` naming the first GetMetricDataV2 limit this request breaks."""
    s, e, n = utc(req.start), utc(req.end), utc(now)
    if not req.resource_arn.startswith("arn:") or ":instance/" not in req.resource_arn:
        raise PlanErrorV2(f"ResourceArn {req.resource_arn!r} is not an instance ARN")
    _check_interval(req.interval, req.time_zone)
    _check_range(s, e, n, req.interval)
    _check_filters(req.filters)
    _check_groupings(req.groupings)
    _check_metrics(req.metrics, req.groupings, [k for k, _v in req.filters])
    if not 1 <= req.max_results <= catalog.MAX_RESULTS_MAX:
        raise PlanErrorV2("MaxResults must be 1-100")


def _check_interval(interval: str, time_zone: str) -> None:
    """Interval: a collected IntervalPeriod (not TOTAL) and an IANA TimeZone."""
    if interval not in catalog.MAX_RANGE_SECONDS or interval == "TOTAL":
        raise PlanErrorV2(f"IntervalPeriod {interval} is not collected")
    try:
        ZoneInfo(time_zone)
    except (KeyError, ValueError):
        raise PlanErrorV2(f"TimeZone {time_zone!r} is not an IANA time zone") from None


def _check_range(s: datetime, e: datetime, n: datetime, interval: str) -> None:
    """StartTime ``s`` and EndTime ``e`` (UTC; ``n`` is now): in order, under the
    interval's range limit, not in the future, and within the 90-day lookback."""
    if e <= s:
        raise PlanErrorV2("EndTime must be later than StartTime")
    if (e - s).total_seconds() >= catalog.MAX_RANGE_SECONDS[interval]:
        days = catalog.MAX_RANGE_SECONDS[interval] // 86400
        raise PlanErrorV2(f"the time range must be less than {days} days for {interval}")
    if e > n:
        raise PlanErrorV2(f"EndTime {fmt(e)} is later than now ({fmt(n)})")
    if s < n - timedelta(seconds=catalog.LOOKBACK_SECONDS):
        raise PlanErrorV2(f"StartTime {fmt(s)} is more than 3 months (90 days) before now ({fmt(n)})")


def _check_filters(filters: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Filters: 1-5 keys, none repeated, at least one resource key, 1-100 values a key,
    valid channels, and at most 100 values across keys (CHANNEL values do not count)."""
    if not 1 <= len(filters) <= catalog.MAX_FILTER_KEYS:
        raise PlanErrorV2(f"Filters takes 1-5 keys, {len(filters)} given")
    keys = [k for k, _v in filters]
    if len(set(keys)) != len(keys):
        raise PlanErrorV2("a filter key is repeated")
    if not catalog.RESOURCE_FILTER_KEYS & set(keys):
        raise PlanErrorV2("Filters needs QUEUE, ROUTING_PROFILE, AGENT or an AGENT_HIERARCHY_LEVEL_* key")
    counted = 0
    for k, values in filters:
        if not 1 <= len(values) <= catalog.MAX_FILTER_VALUES:
            raise PlanErrorV2(f"filter {k} takes 1-100 values, {len(values)} given")
        if k == catalog.CHANNEL:
            for c in values:
                if c not in catalog.CHANNELS:
                    raise PlanErrorV2(f"channel {c} is not valid (VOICE, CHAT, TASK, EMAIL)")
        else:
            counted += len(values)
    if counted > catalog.MAX_FILTER_VALUES:
        raise PlanErrorV2(f"at most 100 filter values across keys (channels excepted), {counted} given")


def _check_groupings(groupings: Sequence[str]) -> None:
    """Groupings: at most 4, none repeated (each metric's own groupings are checked
    in :func:`_check_metric`)."""
    if len(groupings) > catalog.MAX_GROUPINGS:
        raise PlanErrorV2(f"at most 4 groupings, {len(groupings)} given")
    if len(set(groupings)) != len(groupings):
        raise PlanErrorV2("a grouping is repeated")


def _check_metrics(metrics: MetricSetV2, groupings: Sequence[str], keys: Sequence[str]) -> None:
    """Metrics: present, each entry valid for the request's ``groupings`` and filter
    ``keys``, none twice, at most 20 SERVICE_LEVEL entries."""
    if not metrics:
        raise PlanErrorV2("Metrics is required")
    n_sl = 0
    seen = set()
    for m in metrics:
        _check_metric(m, groupings, keys)
        if m.name == catalog.SERVICE_LEVEL:
            n_sl += 1
        if m.match_key in seen:
            raise PlanErrorV2(f"{m.name} is requested twice with the same threshold and filters")
        seen.add(m.match_key)
    if n_sl > catalog.MAX_SERVICE_LEVELS_PER_REQUEST:
        raise PlanErrorV2(f"at most 20 SERVICE_LEVEL metrics a request, {n_sl} given")


def _check_metric(m: MetricV2, groupings: Sequence[str], keys: Sequence[str]) -> None:
    """One Metrics entry: a known metric in its unit, valid for every grouping and
    filter key, with a valid threshold and valid metric filters."""
    spec = catalog.METRICS.get(m.name)
    if spec is None:
        raise PlanErrorV2(catalog.refusal(m.name))
    if m.unit != spec.unit:
        raise PlanErrorV2(f"{m.name} is in {spec.unit}, not {m.unit}")
    for g in groupings:
        if g not in spec.groupings:
            raise PlanErrorV2(f"{m.name} cannot be grouped by {g}")
    for k in keys:
        if k not in spec.filters:
            raise PlanErrorV2(f"{m.name} cannot be filtered by {k}")
    _check_threshold(m, spec)
    _check_metric_filters(m, spec)


def _check_threshold(m: MetricV2, spec: catalog.MetricSpecV2) -> None:
    """A threshold where the metric needs one; a threshold given has a comparison the
    metric takes and a whole-number value from 1 to 604800."""
    if m.threshold is None:
        if spec.takes_threshold:
            raise PlanErrorV2(f"{m.name} needs a Threshold")
    else:
        comp, value = m.threshold
        if comp not in spec.thresholds:
            raise PlanErrorV2(f"{m.name} takes threshold comparisons {'/'.join(spec.thresholds) or 'none'}")
        if value != int(value) or not catalog.THRESHOLD_MIN <= value <= catalog.THRESHOLD_MAX:
            raise PlanErrorV2(f"{m.name}: ThresholdValue must be a whole number from 1 to 604800")


def _check_metric_filters(m: MetricV2, spec: catalog.MetricSpecV2) -> None:
    """At most 2 metric filters, each a key the metric takes, with 1-10 values, and
    negated only where the metric allows it."""
    if len(m.metric_filters) > catalog.MAX_METRIC_FILTERS:
        raise PlanErrorV2(f"{m.name}: at most 2 metric filters, {len(m.metric_filters)} given")
    for f in m.metric_filters:
        if f.key not in spec.metric_filter_keys:
            raise PlanErrorV2(f"{m.name} cannot take metric filter {f.key}")
        if not 1 <= len(f.values) <= catalog.MAX_METRIC_FILTER_VALUES:
            raise PlanErrorV2(f"{m.name}: metric filter {f.key} takes 1-10 values, {len(f.values)} given")
        if f.negate and not spec.negate:
            raise PlanErrorV2(f"{m.name}: Negate is not applicable to its metric filters")
