"""GetMetricDataV2 and the agent/routing-profile/hierarchy listings of the simulator.

The data lives at agent grain: one cell per (agent, queue, channel) and 15-minute
bucket, a pure function of the seed. Every value of a request is aggregated from
the cells its filters select, so the additive metrics sum consistently across
groupings (the per-queue CONTACTS_HANDLED is the sum over that queue's agents,
the per-hour value the sum of its quarters). Ratios (AVG_*, percentages) are
sums of numerators over sums of denominators, null where the denominator is 0.
Groups with no active cell in an interval are left out, as the API leaves out
what has no data.

The same strictness as the v1 endpoint: each documented limit is answered with
the real error type and a message in the API's style.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from collector.apis.v2 import catalog as v2cat
from collector.simulator.fleet import Instance

BUCKET = 900
PERIOD_SECONDS = {"FIFTEEN_MIN": 900, "THIRTY_MIN": 1800, "HOUR": 3600}
ALL_PERIODS = ("FIFTEEN_MIN", "THIRTY_MIN", "HOUR", "DAY", "WEEK", "TOTAL")
# What the simulator models; other valid keys are refused as not simulated.
MODELLED = frozenset({"QUEUE", "CHANNEL", "ROUTING_PROFILE", "AGENT", *v2cat.HIERARCHY_LEVELS})
VALID_FILTER_KEYS = frozenset({k for s in v2cat.METRICS.values() for k in s.filters}) | {
    "CAMPAIGN", "EVALUATION_FORM", "EVALUATOR_ID", "BOT_ID", "AI_AGENT"
}
VALID_GROUPINGS = frozenset({k for s in v2cat.METRICS.values() for k in s.groupings})
HIERARCHY_SIZES = (2, 3, 4, 5, 6)
FIRST = ("Ana", "Ben", "Chloe", "Dev", "Eun", "Femi", "Gita", "Hugo", "Ines", "Jon")
LAST = ("Silva", "Okafor", "Nguyen", "Kowalski", "Haddad", "Ito", "Moreau", "Rossi")


class V2Fault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(msg: str) -> V2Fault:
    return V2Fault(400, "InvalidParameterException", msg)


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _id(*parts: object) -> str:
    x = _h(*parts)
    return f"{x >> 32 & 0xFFFFFFFF:08x}-{x >> 16 & 0xFFFF:04x}-4{x & 0xFFF:03x}-8{_h(x) & 0xFFF:03x}-{_h(x, 1) & 0xFFFFFFFFFFFF:012x}"


@dataclass(frozen=True)
class Agent:
    id: str
    username: str
    first_name: str
    last_name: str
    routing_profile: str
    hierarchy: tuple[str, ...]  # group id per level one..five
    queues: tuple[str, ...]


@dataclass
class World:
    """The agents, hierarchy groups and cells of one instance."""

    agents: list[Agent]
    groups: list[tuple[str, str, int]]  # (id, name, level 1..5)
    cells: list[tuple[Agent, str, str]]  # (agent, queue id, channel)


def world(inst: Instance, agents: int, seed: int) -> World:
    queues = sorted(inst.queues)
    rps = inst.routing_profiles
    groups = [
        (_id(seed, inst.id, "hg", lvl, g), f"level{lvl + 1}-group{g}", lvl + 1)
        for lvl, size in enumerate(HIERARCHY_SIZES)
        for g in range(size)
    ]
    by_level = [[g for g in groups if g[2] == lvl + 1] for lvl in range(5)]
    out: list[Agent] = []
    for k in range(agents):
        qs = tuple(dict.fromkeys(queues[(k * 7 + j * 11) % len(queues)] for j in range(3))) if queues else ()
        out.append(Agent(
            id=_id(seed, inst.id, "agent", k),
            username=f"agent{k:03d}",
            first_name=FIRST[k % len(FIRST)],
            last_name=LAST[(k // len(FIRST)) % len(LAST)],
            routing_profile=rps[k % len(rps)],
            hierarchy=tuple(by_level[lvl][k % HIERARCHY_SIZES[lvl]][0] for lvl in range(5)),
            queues=qs,
        ))
    cells = [(a, q, c) for a in out for q in a.queues for c in ("VOICE", "CHAT", "TASK")]
    return World(out, groups, cells)


def _tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad(f"TimeZone {name} is not valid") from None


def _midnight(d: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(d, time(0), tz).timestamp())


def intervals(start: int, end: int, period: str, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The interval-aligned periods that cover [start, end), clipped to it."""
    if period == "TOTAL":
        return [(start, end)]
    out: list[tuple[int, int]] = []
    if period in PERIOD_SECONDS:
        p = PERIOD_SECONDS[period]
        off = int(datetime.fromtimestamp(start, tz).utcoffset().total_seconds())  # type: ignore[union-attr]
        b = start - (start + off) % p
        while b < end:
            out.append((max(b, start), min(b + p, end)))
            b += p
        return out
    d = datetime.fromtimestamp(start, tz).date()
    step = 7 if period == "WEEK" else 1
    if period == "WEEK":
        d -= timedelta(days=d.weekday())
    b = _midnight(d, tz)
    while b < end:
        n = _midnight(d + timedelta(days=step), tz)
        if n > start:
            out.append((max(b, start), min(n, end)))
        d += timedelta(days=step)
        b = n
    return out


def _last(v: str) -> str:
    return v.rsplit("/", 1)[-1]


class MetricDataV2:
    """Validation and data of ``POST /metrics/data``."""

    def __init__(self, instances: dict[str, Instance], agents: int, seed: int) -> None:
        self.instances = instances
        self.agents = agents
        self.seed = seed
        self._worlds: dict[str, World] = {}
        self._cache: OrderedDict[str, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0

    def world(self, inst: Instance) -> World:
        w = self._worlds.get(inst.id)
        if w is None:
            w = self._worlds[inst.id] = world(inst, self.agents, self.seed)
        return w

    def queue_contacts(self, inst: Instance, queue: str, channel: str, start: int, end: int) -> Contacts | None:
        """The contacts of one queue and channel in [start, end) summed over its agents'
        cells: what GetMetricDataV2 reports for that queue and channel (None: no agent
        serves it). GetMetricData answers from the same contacts."""
        agents = [a for a, q, c in self.world(inst).cells if q == queue and c == channel]
        if not agents:
            return None
        parts = []
        for agent in agents:
            for bucket in range(start // BUCKET, -(-end // BUCKET)):
                h = _h(self.seed, agent.id, queue, channel, bucket)
                if h % 10 < 4:
                    parts.append(contacts(h, 1 + (h >> 8) % 4))
        return Contacts(sum(c.handled for c in parts), sum(c.abandoned for c in parts),
                        tuple(w for c in parts for w in c.waits), sum(c.talk for c in parts),
                        sum(c.hold for c in parts), sum(c.acw for c in parts), sum(c.abandon_wait for c in parts))

    # -- the request ---------------------------------------------------------------
    def instance(self, arn: Any, region: str) -> Instance:
        if not isinstance(arn, str) or ":instance/" not in arn:
            raise _bad("ResourceArn must be the ARN of an Amazon Connect instance")
        iid = arn.split(":instance/", 1)[1].split("/", 1)[0]
        inst = self.instances.get(iid)
        if inst is None or inst.region != region or arn.split(":")[3] != region:
            raise V2Fault(404, "ResourceNotFoundException", f"Instance {iid} not found")
        return inst

    def validate(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        """The request, checked the way the API checks it; returns its parsed parts."""
        start, end = body.get("StartTime"), body.get("EndTime")
        for label, t in (("StartTime", start), ("EndTime", end)):
            if not isinstance(t, int | float) or isinstance(t, bool):
                raise _bad(f"{label} is required")
        assert isinstance(start, int | float) and isinstance(end, int | float)
        interval = body.get("Interval") or {}
        if not isinstance(interval, dict):
            raise _bad("Interval must be an object")
        period = interval.get("IntervalPeriod", "TOTAL")
        if period not in ALL_PERIODS:
            raise _bad(f"IntervalPeriod {period} is not valid")
        tz = _tz(str(interval.get("TimeZone") or "UTC"))
        if end <= start:
            raise _bad("EndTime must be later than StartTime")
        if end > now:
            raise _bad("EndTime cannot be later than the current time")
        limit = v2cat.MAX_RANGE_SECONDS[period]
        if end - start >= limit:
            raise _bad(
                f"The difference between StartTime and EndTime must be less than {limit // 86400} days "
                f"for the {period} interval period"
            )
        if start < now - v2cat.LOOKBACK_SECONDS:
            raise _bad("StartTime cannot be earlier than 3 months before the time of the request")
        filters = body.get("Filters")
        if not isinstance(filters, list) or not 1 <= len(filters) <= v2cat.MAX_FILTER_KEYS:
            raise _bad("Filters must contain between 1 and 5 filter keys")
        parsed: dict[str, list[str]] = {}
        counted = 0
        for f in filters:
            if not isinstance(f, dict):
                raise _bad("Filters entries must be objects")
            key, values = f.get("FilterKey"), f.get("FilterValues")
            if key not in VALID_FILTER_KEYS:
                raise _bad(f"FilterKey {key} is not valid")
            assert isinstance(key, str)
            if key in parsed:
                raise _bad(f"FilterKey {key} is specified more than once")
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise _bad(f"FilterValues of {key} must be a list of strings")
            if not 1 <= len(values) <= v2cat.MAX_FILTER_VALUES:
                raise _bad(f"FilterValues of {key} must have between 1 and 100 items")
            if key == "CHANNEL":
                for c in values:
                    if c not in v2cat.CHANNELS:
                        raise _bad(f"Channel {c} is not valid")
            else:
                counted += len(values)
            if key not in MODELLED:
                raise _bad(f"FilterKey {key} is not modelled by the simulator")
            parsed[key] = [_last(v) for v in values]
        if counted > v2cat.MAX_FILTER_VALUES:
            raise _bad("You can use up to 100 filter values across all filter keys")
        if not v2cat.RESOURCE_FILTER_KEYS & set(parsed):
            raise V2Fault(
                400, "InvalidRequestException",
                "At least one of QUEUE, ROUTING_PROFILE, AGENT, AGENT_HIERARCHY_LEVEL_ONE ... FIVE filters is required",
            )
        groupings = body.get("Groupings") or []
        if not isinstance(groupings, list) or len(groupings) > v2cat.MAX_GROUPINGS:
            raise _bad("Groupings can have at most 4 items")
        for g in groupings:
            if g not in VALID_GROUPINGS:
                raise _bad(f"Grouping {g} is not valid")
            if g not in MODELLED:
                raise _bad(f"Grouping {g} is not modelled by the simulator")
        if len(set(groupings)) != len(groupings):
            raise _bad("Groupings must be unique")
        metrics = body.get("Metrics")
        if not isinstance(metrics, list) or not metrics:
            raise _bad("Metrics is required")
        entries: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []
        n_sl = 0
        seen: set[bytes] = set()
        for m in metrics:
            if not isinstance(m, dict):
                raise _bad("Metrics entries must be objects")
            name = m.get("Name")
            spec = v2cat.METRICS.get(name) if isinstance(name, str) else None
            if spec is None:
                raise _bad(f"Metric {name} is not supported")
            thr = m.get("Threshold") or []
            if not isinstance(thr, list) or len(thr) > v2cat.MAX_THRESHOLDS:
                raise _bad(f"Metric {name}: Threshold can have at most 1 item")
            if spec.takes_threshold and not thr:
                raise _bad(f"Metric {name} requires a Threshold")
            for t in thr:
                if not spec.takes_threshold:
                    raise _bad(f"Metric {name} does not support a Threshold")
                if not isinstance(t, dict) or t.get("Comparison") not in spec.thresholds:
                    raise _bad(f"Metric {name}: Comparison must be one of {', '.join(spec.thresholds)}")
                raw = t.get("ThresholdValue")
                if (not isinstance(raw, int | float) or isinstance(raw, bool) or raw != int(raw)
                        or not v2cat.THRESHOLD_MIN <= raw <= v2cat.THRESHOLD_MAX):
                    raise _bad("ThresholdValue must be a whole number from 1 to 604800")
            mfs = m.get("MetricFilters") or []
            if not isinstance(mfs, list) or len(mfs) > v2cat.MAX_METRIC_FILTERS:
                raise _bad(f"Metric {name}: MetricFilters can have at most 2 items")
            for f in mfs:
                if not isinstance(f, dict) or f.get("MetricFilterKey") not in spec.metric_filter_keys:
                    raise _bad(f"Metric {name}: MetricFilterKey {f.get('MetricFilterKey') if isinstance(f, dict) else f} is not valid")
                vals = f.get("MetricFilterValues")
                if not isinstance(vals, list) or not 1 <= len(vals) <= v2cat.MAX_METRIC_FILTER_VALUES:
                    raise _bad(f"Metric {name}: MetricFilterValues must have between 1 and 10 items")
                if f.get("Negate") and not spec.negate:
                    raise _bad(f"Metric {name}: Negate is not applicable")
            for g in groupings:
                if g not in spec.groupings:
                    raise _bad(f"Metric {name} does not support grouping {g}")
            for k in parsed:
                if k not in spec.filters:
                    raise _bad(f"Metric {name} does not support filter {k}")
            if name == v2cat.SERVICE_LEVEL:
                n_sl += 1
            sig = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
            if sig in seen:
                raise _bad(f"Metric {name} is specified more than once")
            seen.add(sig)
            assert isinstance(name, str)
            entries.append((name, thr, mfs))
        if n_sl > v2cat.MAX_SERVICE_LEVELS_PER_REQUEST:
            raise _bad("You can include up to 20 SERVICE_LEVEL metrics in a request")
        max_results = body.get("MaxResults", 100)
        if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 100:
            raise _bad("MaxResults must be between 1 and 100")
        token = body.get("NextToken")
        if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= v2cat.NEXT_TOKEN_MAX):
            raise _bad("NextToken must be between 1 and 2500 characters")
        return {
            "start": int(start), "end": int(end), "period": period, "tz": tz, "filters": parsed,
            "groupings": list(groupings), "metrics": entries, "max_results": max_results,
        }

    # -- the data ------------------------------------------------------------------
    def results(
        self, inst: Instance, start: int, end: int, period: str, tz: ZoneInfo,
        filters: dict[str, list[str]], groupings: Sequence[str],
        metrics: Sequence[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]],
    ) -> list[dict[str, Any]]:
        """Every result of a request in its stable order: intervals, then groups."""
        w = self.world(inst)
        level = {k: i for i, k in enumerate(v2cat.HIERARCHY_LEVELS)}

        def value_of(cell: tuple[Agent, str, str], key: str) -> str:
            a, q, c = cell
            if key == "QUEUE":
                return q
            if key == "CHANNEL":
                return c
            if key == "ROUTING_PROFILE":
                return a.routing_profile
            if key == "AGENT":
                return a.id
            return a.hierarchy[level[key]]

        sets = {k: set(v) for k, v in filters.items()}
        cells = [cell for cell in w.cells if all(value_of(cell, k) in vs for k, vs in sets.items())]
        kinds = []
        for name, thr, mfs in metrics:
            spec = v2cat.METRICS[name]
            salt = _h("metric", name, orjson.dumps(thr, option=orjson.OPT_SORT_KEYS),
                      orjson.dumps(mfs, option=orjson.OPT_SORT_KEYS))
            if name == "CONTACTS_HANDLED" and not mfs:
                kind = "handled"
            elif not mfs and name in _COHERENT:
                kind = name
            elif name.startswith("MAX_"):
                kind = "max"
            elif name.startswith("AVG_"):
                kind = "avg"
            elif spec.unit == "PERCENT":
                kind = "pct"
            elif spec.unit == "COUNT":
                kind = "count"
            else:
                kind = "secs"
            metric: dict[str, Any] = {"Name": name}
            if thr:
                metric["Threshold"] = thr
            if mfs:
                metric["MetricFilters"] = mfs
            kinds.append((kind, salt, metric))
        out: list[dict[str, Any]] = []
        seed = self.seed
        for a, b in intervals(start, end, period, tz):
            groups: dict[tuple[str, ...], list[list[float]]] = {}
            for cell in cells:
                agent, q, ch = cell
                key = tuple(value_of(cell, g) for g in groupings)
                for bucket in range(a // BUCKET, -(-b // BUCKET)):
                    h = _h(seed, agent.id, q, ch, bucket)
                    if h % 10 >= 4:
                        continue  # no contacts in this cell and quarter
                    handled = 1 + (h >> 8) % 4
                    answered = (h >> 16) % 3
                    acc = groups.get(key)
                    if acc is None:
                        acc = groups[key] = [[0.0, 0.0] for _ in kinds]
                    cs: Contacts | None = None
                    for i, (kind, salt, m) in enumerate(kinds):
                        x = ((h ^ salt) * 0x9E3779B97F4A7C15) % (1 << 61)
                        slot = acc[i]
                        if kind in _COHERENT:
                            cs = cs or contacts(h, handled)
                            num, den = _coherent(kind, cs, m.get("Threshold"))
                            slot[0] += num
                            slot[1] += den
                        elif kind == "handled":
                            slot[0] += handled
                        elif kind == "count":
                            slot[0] += x % (handled + 1)
                        elif kind == "secs":
                            slot[0] += x % 900
                        elif kind == "max":
                            slot[0] = max(slot[0], float(x % 900))
                        elif kind == "avg":
                            slot[0] += answered * (x % 300)
                            slot[1] += answered
                        else:  # pct
                            slot[0] += x % (answered + 1)
                            slot[1] += answered
            for key in sorted(groups):
                acc = groups[key]
                colls = []
                for (kind, _salt, metric), (num, den) in zip(kinds, acc, strict=True):
                    coll: dict[str, Any] = {"Metric": metric}
                    if kind in _COHERENT:
                        shape = _COHERENT[kind]
                        if shape == "sum":
                            coll["Value"] = round(num, 3)
                        elif den:
                            coll["Value"] = round(num / den, 3) if shape == "avg" else round(100.0 * num / den, 2)
                        else:
                            coll["Value"] = None
                    elif kind in ("avg", "pct"):
                        if den:
                            coll["Value"] = round(num / den, 3) if kind == "avg" else round(100.0 * num / den, 2)
                        else:
                            coll["Value"] = None  # divide by zero: the API gives null
                    else:
                        coll["Value"] = num
                    colls.append(coll)
                dims: dict[str, str] = {}
                for g, v in zip(groupings, key, strict=True):
                    dims[g] = v
                    if g == "QUEUE":
                        dims["QUEUE_ARN"] = inst.queue_arn(v)
                    elif g == "ROUTING_PROFILE":
                        dims["ROUTING_PROFILE_ARN"] = inst.routing_profile_arn(v)
                    elif g == "AGENT":
                        dims["AGENT_ARN"] = f"{inst.arn}/agent/{v}"
                    elif g in level:
                        dims[f"{g}_ARN"] = f"{inst.arn}/agent-group/{v}"
                out.append({
                    "Dimensions": dims,
                    "MetricInterval": {"Interval": period, "StartTime": a, "EndTime": b},
                    "Collections": colls,
                })
        return out

    def page(self, inst: Instance, body: dict[str, Any], now: float,
             read_token: Callable[[str, str], int], make_token: Callable[[str, int], str]) -> bytes:
        req = self.validate(body, now)
        self.calls += 1
        params = {k: v for k, v in body.items() if k != "NextToken"}
        phash = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        offset = 0
        if (token := body.get("NextToken")) is not None:
            offset = read_token(str(token), phash)
        with self._lock:  # pages may be answered on worker threads (the server's V2 handler)
            frags = self._cache.get(phash)
            if frags is not None:
                self._cache.move_to_end(phash)
        if frags is None:
            res = self.results(inst, req["start"], req["end"], req["period"], req["tz"], req["filters"],
                               req["groupings"], req["metrics"])
            frags = [orjson.dumps(r) for r in res]
            with self._lock:
                self._cache[phash] = frags
                while len(self._cache) > 64:  # a request per account and window at once (the bench)
                    self._cache.popitem(last=False)
        n = req["max_results"]
        out = b'{"MetricResults":[' + b",".join(frags[offset : offset + n]) + b"]"
        if offset + n < len(frags):
            out += b',"NextToken":' + orjson.dumps(make_token(phash, offset + n))
        return out + b"}"


def list_page(items: list[dict[str, Any]], query: Any, key: str) -> dict[str, Any]:
    """One page of a List* operation: ``maxResults`` 1-1000 (default 100), opaque ``nextToken``."""
    try:
        max_results = int(query.get("maxResults", 100))
    except ValueError:
        raise _bad("maxResults must be a number") from None
    if not 1 <= max_results <= 1000:
        raise _bad("maxResults must be between 1 and 1000")
    offset = 0
    if tok := query.get("nextToken"):
        try:
            offset = int(base64.urlsafe_b64decode(tok.encode()).decode())
        except Exception:
            raise _bad("The nextToken is not valid") from None
    out: dict[str, Any] = {key: items[offset : offset + max_results]}
    if offset + max_results < len(items):
        out["NextToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
    return out


def users(inst: Instance, w: World) -> list[dict[str, Any]]:
    return [
        {"Id": a.id, "Arn": f"{inst.arn}/agent/{a.id}", "Username": a.username,
         "LastModifiedTime": 1_700_000_000, "LastModifiedRegion": inst.region}
        for a in w.agents
    ]


def search_users(inst: Instance, w: World, body: Any) -> dict[str, Any]:
    """SearchUsers without criteria: every user with names, routing profile and hierarchy group."""
    if not isinstance(body, dict):
        raise _bad("The request body is not a JSON object")
    max_results = body.get("MaxResults", 100)
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 500:
        raise _bad("MaxResults must be between 1 and 500")
    if body.get("SearchCriteria") or body.get("SearchFilter"):
        raise _bad("SearchCriteria and SearchFilter are not modelled by the simulator")
    offset = 0
    if tok := body.get("NextToken"):
        try:
            offset = int(base64.urlsafe_b64decode(str(tok).encode()).decode())
        except Exception:
            raise _bad("The NextToken is not valid") from None
    page = w.agents[offset : offset + max_results]
    out: dict[str, Any] = {
        "Users": [
            {"Id": a.id, "Arn": f"{inst.arn}/agent/{a.id}", "Username": a.username,
             "IdentityInfo": {"FirstName": a.first_name, "LastName": a.last_name},
             "RoutingProfileId": a.routing_profile, "HierarchyGroupId": a.hierarchy[-1],
             "SecurityProfileIds": [], "Tags": {}}
            for a in page
        ],
        "ApproximateTotalCount": len(w.agents),
    }
    if offset + max_results < len(w.agents):
        out["NextToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
    return out


def routing_profiles(inst: Instance) -> list[dict[str, Any]]:
    return [
        {"Id": r, "Arn": inst.routing_profile_arn(r), "Name": f"routing-profile-{i}",
         "LastModifiedTime": 1_700_000_000, "LastModifiedRegion": inst.region}
        for i, r in enumerate(inst.routing_profiles)
    ]


def hierarchy_groups(inst: Instance, w: World) -> list[dict[str, Any]]:
    return [
        {"Id": g, "Arn": f"{inst.arn}/agent-group/{g}", "Name": name,
         "LastModifiedTime": 1_700_000_000, "LastModifiedRegion": inst.region}
        for g, name, _lvl in w.groups
    ]


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# -- one stream of contacts -------------------------------------------------------------
# Every (agent, queue, channel) cell and quarter hour with traffic has a few contacts,
# each a pure function of the cell's hash: the agent handled ``handled`` of them after a
# queue wait, with talk, hold and after-contact work; ``abandoned`` more left the queue.
# The metrics below all derive from these, so they agree the way Connect's do: service
# level rises with the threshold, answered + abandoned = queued, handle time >=
# interaction + hold >= interaction time, occupancy = contact / (contact + idle) time.


@dataclass(frozen=True, slots=True)
class Contacts:
    handled: int
    abandoned: int
    waits: tuple[int, ...]  # queue wait of each handled contact, seconds
    talk: int  # sums over the handled contacts, seconds
    hold: int
    acw: int
    abandon_wait: int  # sum over the abandoned contacts

    @property
    def queued(self) -> int:
        return self.handled + self.abandoned

    @property
    def handle(self) -> int:
        return self.talk + self.hold + self.acw


def contacts(h: int, handled: int) -> Contacts:
    g = _h("contacts", h)
    waits = tuple((g >> (6 * j)) % 64 * 3 for j in range(handled))  # 0..189 s
    talk = sum(60 + (g >> (24 + 5 * j)) % 32 * 15 for j in range(handled))
    hold = sum((g >> (44 + 3 * j)) % 8 * 10 for j in range(handled))
    acw = handled * (10 + (g >> 56) % 8 * 5)
    abandoned = (g >> 60) % 3 // 2
    return Contacts(handled, abandoned, waits, talk, hold, acw, abandoned * (20 + (g >> 61) % 7 * 10))


# metric -> how its (numerator, denominator) become a value: "sum", "avg" (num / den) or
# "pct" (100 * num / den)
_COHERENT: dict[str, str] = {
    "CONTACTS_QUEUED": "sum", "CONTACTS_ABANDONED": "sum", "SUM_CONTACTS_ANSWERED_IN_X": "sum",
    "SUM_HANDLE_TIME": "sum", "SUM_CONTACT_TIME_AGENT": "sum", "SUM_IDLE_TIME_AGENT": "sum",
    "SERVICE_LEVEL": "pct", "ABANDONMENT_RATE": "pct", "AGENT_OCCUPANCY": "pct",
    "AVG_HANDLE_TIME": "avg", "AVG_INTERACTION_TIME": "avg", "AVG_HOLD_TIME": "avg",
    "AVG_INTERACTION_AND_HOLD_TIME": "avg", "AVG_AFTER_CONTACT_WORK_TIME": "avg",
    "AVG_QUEUE_ANSWER_TIME": "avg", "AVG_ABANDON_TIME": "avg",
}


def _within(c: Contacts, threshold: Any) -> int:
    t = (threshold or [{}])[0]
    x, lte = float(t.get("ThresholdValue", 0)), t.get("Comparison") == "LTE"
    return sum(1 for w in c.waits if (w <= x if lte else w < x))


def _coherent(name: str, c: Contacts, threshold: Any) -> tuple[float, float]:
    if name == "CONTACTS_QUEUED":
        return c.queued, 0
    if name == "CONTACTS_ABANDONED":
        return c.abandoned, 0
    if name == "SUM_CONTACTS_ANSWERED_IN_X":
        return _within(c, threshold), 0
    if name == "SERVICE_LEVEL":
        return _within(c, threshold), c.queued
    if name == "ABANDONMENT_RATE":
        return c.abandoned, c.queued
    if name in ("SUM_HANDLE_TIME", "SUM_CONTACT_TIME_AGENT"):
        return c.handle, 0
    if name == "SUM_IDLE_TIME_AGENT":
        return max(0, BUCKET // 3 - c.handle // 4), 0
    if name == "AGENT_OCCUPANCY":
        return c.handle, c.handle + max(0, BUCKET // 3 - c.handle // 4)
    if name == "AVG_ABANDON_TIME":
        return c.abandon_wait, c.abandoned
    num = {"AVG_HANDLE_TIME": c.handle, "AVG_INTERACTION_TIME": c.talk, "AVG_HOLD_TIME": c.hold,
           "AVG_INTERACTION_AND_HOLD_TIME": c.talk + c.hold, "AVG_AFTER_CONTACT_WORK_TIME": c.acw,
           "AVG_QUEUE_ANSWER_TIME": sum(c.waits)}[name]
    return num, c.handled


# GetMetricData (v1) names read from the same contacts: (numerator, denominator) as for V2
_V1_FROM_V2 = {
    "CONTACTS_QUEUED": "CONTACTS_QUEUED", "CONTACTS_ABANDONED": "CONTACTS_ABANDONED",
    "HANDLE_TIME": "AVG_HANDLE_TIME", "INTERACTION_TIME": "AVG_INTERACTION_TIME", "HOLD_TIME": "AVG_HOLD_TIME",
    "INTERACTION_AND_HOLD_TIME": "AVG_INTERACTION_AND_HOLD_TIME",
    "AFTER_CONTACT_WORK_TIME": "AVG_AFTER_CONTACT_WORK_TIME", "QUEUE_ANSWER_TIME": "AVG_QUEUE_ANSWER_TIME",
    "ABANDON_TIME": "AVG_ABANDON_TIME",
}


def v1_values(c: Contacts, h: int, metrics: Sequence[tuple[str, float | None]], units: dict[str, str],
              salts: dict[str, int], provisional: bool = False) -> list[float | None]:
    """GetMetricData values of a queue and channel from its contacts (the ones V2 reports):
    counts, averages and service levels agree with GetMetricDataV2's for the same slice;
    metrics V2 does not model here get values of their own, bounded by the counts.
    ``provisional`` halves the counts (late contacts not landed yet)."""
    out: list[float | None] = []
    for name, thr in metrics:
        unit = units[name]
        if name == "CONTACTS_HANDLED":
            v: float | None = float(c.handled)
        elif name in _V1_FROM_V2:
            num, den = _coherent(_V1_FROM_V2[name], c, None)
            v = float(num) if unit == "COUNT" else (round(num / den, 3) if den else None)
        elif name == "SERVICE_LEVEL":
            num, den = _coherent("SERVICE_LEVEL", c, [{"Comparison": "LT", "ThresholdValue": thr or 0}])
            v = round(100.0 * num / den, 2) if den else None
        elif name == "QUEUED_TIME":
            v = float(max(c.waits)) if c.waits else None
        else:
            hv = (h ^ salts[name]) * 0x9E3779B97F4A7C15 % (1 << 61)
            if unit == "COUNT":
                v = float(hv % (c.handled + 1))
            elif not c.handled:
                v = None
            elif unit == "PERCENT":
                v = round((hv % 10_001) / 100.0, 2)
            else:
                v = round((hv % 600_000) / 1000.0, 3)
        if provisional and unit == "COUNT" and v is not None:
            v = float(int(v) // 2)
        out.append(v)
    return out
