"""V2 profile + time range -> windows of interval-aligned slices and their requests.

Pure: no I/O. Every limit of GetMetricDataV2 is checked here before a request
leaves (:func:`check_request` runs on each planned request, and again right
before it is sent):

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
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from collector.errors import PlanErrorV2 as PlanError
from collector.model import SliceKey, Target
from collector.v2 import catalog
from collector.v2.model import MetricFilterV2, MetricSetV2, MetricV2, V2Request, V2Window
from collector.v2.settings import V2ProfileSettings


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise PlanError(f"{t.isoformat()} has no time zone; give an offset such as Z or +00:00")
    return t.astimezone(UTC)


def fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- slices ---------------------------------------------------------------------------
def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tz).astimezone(UTC)


def floor_boundary(t: datetime, interval: str, time_zone: str) -> datetime:
    """The latest slice boundary at or before ``t``."""
    t = _utc(t)
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
        raise PlanError(f"interval {interval} is not collected (FIFTEEN_MIN, THIRTY_MIN, HOUR, DAY, WEEK)")
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
    return b if b == _utc(t) else next_boundary(b, interval, time_zone)


def slices(start: datetime, end: datetime, interval: str, time_zone: str) -> list[tuple[datetime, datetime]]:
    """Tile [start, end) with interval-aligned slices; both ends must be boundaries."""
    s, e = _utc(start), _utc(end)
    if e <= s:
        raise PlanError(f"end {fmt(e)} is not after start {fmt(s)}")
    for label, t in (("start", s), ("end", e)):
        if floor_boundary(t, interval, time_zone) != t:
            raise PlanError(
                f"{label} {fmt(t)} is not on a {interval} boundary in {time_zone} "
                f"(the nearest earlier one is {fmt(floor_boundary(t, interval, time_zone))})"
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
    edge = _utc(now) - timedelta(seconds=catalog.LOOKBACK_SECONDS - margin)
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
        raise PlanError(f"{where}GetMetricDataV2 needs at least one filter")
    if len(keys) > catalog.MAX_FILTER_KEYS:
        raise PlanError(f"{where}{len(keys)} filter keys; GetMetricDataV2 takes at most 5")
    if not catalog.RESOURCE_FILTER_KEYS & set(keys):
        raise PlanError(f"{where}needs a QUEUE, ROUTING_PROFILE, AGENT or AGENT_HIERARCHY_LEVEL_* filter")
    for k in keys:
        if not filters[k]:
            raise PlanError(f"{where}filter {k} has no values (nothing discovered?)")
    counted = sorted((k for k in keys if k not in catalog.UNCOUNTED_FILTER_KEYS), key=lambda k: len(filters[k]))
    budget = catalog.MAX_FILTER_VALUES
    if len(counted) > budget:
        raise PlanError(f"{where}more filter keys than filter values allowed")
    sizes: dict[str, int] = {}
    for i, k in enumerate(counted):
        share = budget // (len(counted) - i)
        sizes[k] = min(len(filters[k]), share)
        budget -= sizes[k]
    for k in counted:
        if sizes[k] < len(filters[k]) and k not in groupings:
            raise PlanError(
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
    spans = slices(start, end, interval, tz)
    n = _utc(now)
    oldest = oldest_start(n, interval, tz, lookback_margin)
    if spans[0][0] < oldest:
        raise PlanError(
            f"start {fmt(spans[0][0])} is more than 90 days ago (the earliest {interval} slice "
            f"still served with a {lookback_margin}s margin starts {fmt(oldest)}); GetMetricDataV2 keeps 3 months"
        )
    if spans[-1][1] > n:
        raise PlanError(f"end {fmt(spans[-1][1])} is in the future (now {fmt(n)})")
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
                    raise PlanError(f"instance {target.instance_id}: filter {key} = \"all\" is not discovered yet")
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


def instance_arn(target: Target) -> str:
    if target.instance_id.startswith("arn:"):
        return target.instance_id
    partition = "aws-cn" if target.region.startswith("cn-") else (
        "aws-us-gov" if target.region.startswith("us-gov-") else "aws"
    )
    return f"arn:{partition}:connect:{target.region}:{target.account}:instance/{target.instance_id}"


def check_request(req: V2Request, now: datetime) -> None:
    """Raise :class:`PlanError` naming the first GetMetricDataV2 limit this request breaks."""
    s, e, n = _utc(req.start), _utc(req.end), _utc(now)
    if not req.resource_arn.startswith("arn:") or ":instance/" not in req.resource_arn:
        raise PlanError(f"ResourceArn {req.resource_arn!r} is not an instance ARN")
    if req.interval not in catalog.MAX_RANGE_SECONDS or req.interval == "TOTAL":
        raise PlanError(f"IntervalPeriod {req.interval} is not collected")
    try:
        ZoneInfo(req.time_zone)
    except (KeyError, ValueError):
        raise PlanError(f"TimeZone {req.time_zone!r} is not an IANA time zone") from None
    if e <= s:
        raise PlanError("EndTime must be later than StartTime")
    if (e - s).total_seconds() >= catalog.MAX_RANGE_SECONDS[req.interval]:
        days = catalog.MAX_RANGE_SECONDS[req.interval] // 86400
        raise PlanError(f"the time range must be less than {days} days for {req.interval}")
    if e > n:
        raise PlanError(f"EndTime {fmt(e)} is later than now ({fmt(n)})")
    if s < n - timedelta(seconds=catalog.LOOKBACK_SECONDS):
        raise PlanError(f"StartTime {fmt(s)} is more than 3 months (90 days) before now ({fmt(n)})")
    if not 1 <= len(req.filters) <= catalog.MAX_FILTER_KEYS:
        raise PlanError(f"Filters takes 1-5 keys, {len(req.filters)} given")
    keys = [k for k, _v in req.filters]
    if len(set(keys)) != len(keys):
        raise PlanError("a filter key is repeated")
    if not catalog.RESOURCE_FILTER_KEYS & set(keys):
        raise PlanError("Filters needs QUEUE, ROUTING_PROFILE, AGENT or an AGENT_HIERARCHY_LEVEL_* key")
    counted = 0
    for k, values in req.filters:
        if not 1 <= len(values) <= catalog.MAX_FILTER_VALUES:
            raise PlanError(f"filter {k} takes 1-100 values, {len(values)} given")
        if k == catalog.CHANNEL:
            for c in values:
                if c not in catalog.CHANNELS:
                    raise PlanError(f"channel {c} is not valid (VOICE, CHAT, TASK, EMAIL)")
        else:
            counted += len(values)
    if counted > catalog.MAX_FILTER_VALUES:
        raise PlanError(f"at most 100 filter values across keys (channels excepted), {counted} given")
    if len(req.groupings) > catalog.MAX_GROUPINGS:
        raise PlanError(f"at most 4 groupings, {len(req.groupings)} given")
    if len(set(req.groupings)) != len(req.groupings):
        raise PlanError("a grouping is repeated")
    if not req.metrics:
        raise PlanError("Metrics is required")
    n_sl = 0
    seen = set()
    for m in req.metrics:
        spec = catalog.METRICS.get(m.name)
        if spec is None:
            raise PlanError(catalog.refusal(m.name))
        if m.unit != spec.unit:
            raise PlanError(f"{m.name} is in {spec.unit}, not {m.unit}")
        for g in req.groupings:
            if g not in spec.groupings:
                raise PlanError(f"{m.name} cannot be grouped by {g}")
        for k in keys:
            if k not in spec.filters:
                raise PlanError(f"{m.name} cannot be filtered by {k}")
        if m.threshold is None:
            if spec.takes_threshold:
                raise PlanError(f"{m.name} needs a Threshold")
        else:
            comp, value = m.threshold
            if comp not in spec.thresholds:
                raise PlanError(f"{m.name} takes threshold comparisons {'/'.join(spec.thresholds) or 'none'}")
            if value != int(value) or not catalog.THRESHOLD_MIN <= value <= catalog.THRESHOLD_MAX:
                raise PlanError(f"{m.name}: ThresholdValue must be a whole number from 1 to 604800")
        if len(m.metric_filters) > catalog.MAX_METRIC_FILTERS:
            raise PlanError(f"{m.name}: at most 2 metric filters, {len(m.metric_filters)} given")
        for f in m.metric_filters:
            if f.key not in spec.metric_filter_keys:
                raise PlanError(f"{m.name} cannot take metric filter {f.key}")
            if not 1 <= len(f.values) <= catalog.MAX_METRIC_FILTER_VALUES:
                raise PlanError(f"{m.name}: metric filter {f.key} takes 1-10 values, {len(f.values)} given")
            if f.negate and not spec.negate:
                raise PlanError(f"{m.name}: Negate is not applicable to its metric filters")
        if m.name == catalog.SERVICE_LEVEL:
            n_sl += 1
        if m.match_key in seen:
            raise PlanError(f"{m.name} is requested twice with the same threshold and filters")
        seen.add(m.match_key)
    if n_sl > catalog.MAX_SERVICE_LEVELS_PER_REQUEST:
        raise PlanError(f"at most 20 SERVICE_LEVEL metrics a request, {n_sl} given")
    if not 1 <= req.max_results <= catalog.MAX_RESULTS_MAX:
        raise PlanError("MaxResults must be 1-100")
