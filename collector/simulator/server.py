"""HTTP server that speaks Connect's REST-JSON wire format and enforces its rules.

Errors carry the real codes and statuses: the code in ``x-amzn-ErrorType``,
the message in the body's ``message``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from collector.apis.v1 import catalog
from collector.simulator import realtime as simrt
from collector.simulator import v2 as simv2
from collector.simulator.fleet import _METRIC_SALT as METRIC_SALTS
from collector.simulator.fleet import _UNIT as METRIC_UNITS
from collector.simulator.fleet import Fleet, FleetSpec, Instance
from collector.simulator.fleet import _h as fleet_hash

_CRED = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass
class SimulatorConfig:
    fleet: FleetSpec = field(default_factory=FleetSpec)
    rate: float = 5.0  # GetMetricData requests per second per (account, Region)
    burst: int = 8
    list_queues_rate: float = 10.0
    list_queues_burst: int = 10
    list_instances_rate: float = 2.0
    list_instances_burst: int = 5
    error_rate: float = 0.0  # share of requests answered with 500
    latency: float = 0.0  # seconds added to every response
    throttle: bool = True
    fault_seed: int = 1
    late_seconds: int = 0  # counts keep growing until this long after a slice ends
    metric_data_v2_rate: float = 10.0  # GetMetricDataV2 per (account, Region)
    metric_data_v2_burst: int = 10
    list_v2_rate: float = 10.0  # ListUsers, ListRoutingProfiles, ListUserHierarchyGroups (each)
    list_v2_burst: int = 10
    current_metric_data_rate: float = 5.0  # GetCurrentMetricData per (account, Region)
    current_metric_data_burst: int = 8
    current_user_data_rate: float = 5.0  # GetCurrentUserData per (account, Region)
    current_user_data_burst: int = 8


class ApiFault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(msg: str) -> ApiFault:
    return ApiFault(400, "InvalidParameterException", msg)


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Stats:
    by_status: Counter[int] = field(default_factory=Counter)
    by_op_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    bad_requests: list[str] = field(default_factory=list)
    # (account, region) -> times of GetMetricData calls that were served (not throttled)
    served_at: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    calls_by_account: Counter[str] = field(default_factory=Counter)
    # (account, region) -> times of GetMetricDataV2 calls that were served (not throttled)
    served_at_v2: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    # "op:account:status" -> wall-clock times of the real-time calls (GetCurrentMetricData,
    # GetCurrentUserData), served (200) or throttled (429): calls per period per account
    realtime_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def count(self, op: str, status: int, code: str = "") -> None:
        self.by_status[status] += 1
        self.by_op_status[(op, status)] += 1
        if code:
            self.by_code[code] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_op_status": {f"{o}:{s}": v for (o, s), v in self.by_op_status.items()},
            "by_code": dict(self.by_code),
            "bad_requests": self.bad_requests[-20:],
            "calls_by_account": dict(self.calls_by_account),
            "windows": {f"{a}/{r}": [min(t), max(t), len(t)] for (a, r), t in self.served_at.items() if t},
            "windows_v2": {f"{a}/{r}": [min(t), max(t), len(t)] for (a, r), t in self.served_at_v2.items() if t},
            "realtime_at": {k: [round(x, 3) for x in t] for k, t in self.realtime_at.items()},
        }


class Simulator:
    """The simulated Connect service: rules, quotas, faults, data."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.fleet = Fleet(self.config.fleet)
        self.now = now
        self.monotonic = monotonic
        self.stats = Stats()
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._rng = random.Random(self.config.fault_seed)
        self.key_accounts: dict[str, str] = {}  # access key id -> account (assumed roles)
        # When set (e.g. backed by an STS emulator), every caller must resolve to an account,
        # and may only touch that account's instances.
        self.key_resolver: Callable[[str], str | None] | None = None
        self.fail_next: list[tuple[int, str, str]] = []  # queued faults for tests
        self.delay_next: list[float] = []  # seconds to stall the next GetMetricData answers
        # While ``hold`` is set to an unset event, GetMetricData answers wait for it
        # (``held`` of them are waiting): a test decides when an in-flight fetch completes.
        self.hold: asyncio.Event | None = None
        self.held = 0
        self.reset_next = 0  # drop the connection halfway through the next N GetMetricData bodies
        self.corrupt_next: list[bytes] = []  # bodies to answer the next GetMetricData calls with
        self.repeat_group_next = 0  # the next N GetMetricData pages repeat their first dimension group
        self.served: list[tuple[int, int, bool]] = []  # (start, end, provisional) of each GetMetricData page
        self.queues_asked: list[tuple[float, frozenset[str]]] = []  # (when, Queues filter) per page
        self.v2 = simv2.MetricDataV2(self.fleet.instances, self.config.fleet.agents_per_instance,
                                     self.config.fleet.seed)
        self.realtime = simrt.Realtime(self.v2)
        self.rt_tokens = simrt.Tokens(lambda: self.now())

    # -- quotas ------------------------------------------------------------------
    def _bucket(self, account: str, region: str, op: str) -> TokenBucket:
        key = (account, region, op)
        b = self._buckets.get(key)
        if b is None:
            c = self.config
            rate, burst = {
                "GetMetricData": (c.rate, c.burst),
                "ListQueues": (c.list_queues_rate, c.list_queues_burst),
                "ListInstances": (c.list_instances_rate, c.list_instances_burst),
                "GetMetricDataV2": (c.metric_data_v2_rate, c.metric_data_v2_burst),
                "ListUsers": (c.list_v2_rate, c.list_v2_burst),
                "SearchUsers": (c.list_v2_rate, c.list_v2_burst),
                "ListRoutingProfiles": (c.list_v2_rate, c.list_v2_burst),
                "ListUserHierarchyGroups": (c.list_v2_rate, c.list_v2_burst),
                "GetCurrentMetricData": (c.current_metric_data_rate, c.current_metric_data_burst),
                "GetCurrentUserData": (c.current_user_data_rate, c.current_user_data_burst),
            }[op]
            b = self._buckets[key] = TokenBucket(rate, burst, self.monotonic)
        return b

    def _gate(self, op: str, account: str, region: str) -> None:
        if self.fail_next:
            status, code, msg = self.fail_next.pop(0)
            raise ApiFault(status, code, msg)
        if self.config.throttle and not self._bucket(account, region, op).take():
            raise ApiFault(429, "ThrottlingException", "Rate exceeded")
        if self.config.error_rate and self._rng.random() < self.config.error_rate:
            raise ApiFault(500, "InternalServiceException", "Internal service error (injected)")

    def _instance(self, instance_id: str, region: str) -> Instance:
        inst = self.fleet.instances.get(instance_id)
        if inst is None or inst.region != region:
            raise ApiFault(404, "ResourceNotFoundException", f"Instance {instance_id} not found")
        return inst

    # -- tokens ------------------------------------------------------------------
    @staticmethod
    def _params_hash(body: dict[str, Any], instance_id: str) -> str:
        params = {k: v for k, v in body.items() if k not in ("NextToken",)}
        params["InstanceId"] = instance_id
        return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def _make_token(self, phash: str, offset: int) -> str:
        raw = orjson.dumps({"h": phash, "o": offset, "t": self.now()})
        return base64.urlsafe_b64encode(raw).decode()

    def _read_token(self, token: str, phash: str) -> int:
        try:
            data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
            offset, issued, h = int(data["o"]), float(data["t"]), str(data["h"])
        except Exception:
            raise _bad("The NextToken is not valid") from None
        if h != phash:
            raise _bad("The NextToken was issued for different request parameters")
        if self.now() - issued > catalog.NEXT_TOKEN_TTL_SECONDS:
            raise ApiFault(400, "InvalidRequestException", "The NextToken has expired")
        return offset

    # -- operations --------------------------------------------------------------
    def get_metric_data(self, instance_id: str, region: str, body: Any) -> bytes:
        if not isinstance(body, dict):
            raise ApiFault(400, "InvalidRequestException", "The request body is not a JSON object")
        inst = self._instance(instance_id, region)
        now = self.now()
        start, end = body.get("StartTime"), body.get("EndTime")
        for label, t in (("StartTime", start), ("EndTime", end)):
            if not isinstance(t, int | float) or isinstance(t, bool):
                raise _bad(f"{label} is required")
            if int(t) != t or int(t) % 300:
                raise _bad(f"{label} must be a multiple of 5 minutes")
        assert isinstance(start, int | float) and isinstance(end, int | float)
        if end <= start:
            raise _bad("EndTime must be later than StartTime")
        if end - start >= catalog.MAX_RANGE_SECONDS:
            raise _bad("The time range between StartTime and EndTime must be less than 24 hours")
        if start < now - catalog.LOOKBACK_SECONDS:
            raise _bad("StartTime cannot be earlier than 24 hours before the time of the request")
        filters = body.get("Filters")
        if not isinstance(filters, dict) or not filters:
            raise _bad("Filters is required")
        for key, values in filters.items():
            if key == "RoutingStepExpressions":
                raise _bad("RoutingStepExpressions is not a valid filter for GetMetricData")
            if key not in catalog.FILTER_LIMITS:
                raise ApiFault(400, "SerializationException", f"Unknown filter {key}")
            lo, hi = catalog.FILTER_LIMITS[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _bad(f"Filters.{key} must be a list of strings")
            if not lo <= len(values) <= hi:
                raise _bad(f"Filters.{key} must have between {lo} and {hi} items")
            if key == "Channels":
                for c in values:
                    if c not in catalog.CHANNELS:
                        raise _bad(f"Channel {c} is not supported")
        groupings = body.get("Groupings") or []
        if not isinstance(groupings, list):
            raise _bad("Groupings must be a list")
        if len(groupings) > catalog.MAX_GROUPINGS:
            raise _bad("At most 2 groupings can be specified")
        for g in groupings:
            if g not in catalog.GROUPINGS:
                raise _bad(f"Grouping {g} is not valid")
            if g in catalog.V1_UNSUPPORTED_GROUPINGS:
                raise _bad("ROUTING_STEP_EXPRESSION is not a valid grouping for GetMetricData")
        if len(set(groupings)) != len(groupings):
            raise _bad("Groupings must be unique")
        metrics = body.get("HistoricalMetrics")
        if not isinstance(metrics, list) or not metrics:
            raise _bad("HistoricalMetrics is required")
        wanted: list[tuple[str, float | None]] = []
        n_sl = 0
        for m in metrics:
            if not isinstance(m, dict):
                raise _bad("HistoricalMetrics entries must be objects")
            name = m.get("Name")
            spec = catalog.METRICS.get(name) if isinstance(name, str) else None
            if spec is None:
                raise _bad(f"Metric {name} is not supported")
            if m.get("Unit") != spec.unit or m.get("Statistic") != spec.statistic:
                raise _bad(
                    f"Metric {name} requires Unit {spec.unit} and Statistic {spec.statistic}"
                )
            thr = m.get("Threshold")
            tv: float | None = None
            if name == catalog.SERVICE_LEVEL:
                n_sl += 1
                if not isinstance(thr, dict) or thr.get("Comparison") != "LT":
                    raise _bad("SERVICE_LEVEL requires a Threshold with Comparison LT")
                raw = thr.get("ThresholdValue")
                if (
                    not isinstance(raw, int | float)
                    or isinstance(raw, bool)
                    or raw != int(raw)
                    or not catalog.THRESHOLD_MIN <= raw <= catalog.THRESHOLD_MAX
                ):
                    raise _bad("ThresholdValue must be a whole number from 1 to 604800")
                tv = float(raw)
            elif thr is not None:
                raise _bad(f"Metric {name} does not take a Threshold")
            assert isinstance(name, str)
            if (name, tv) in wanted:
                raise _bad(f"Metric {name} is specified more than once")
            wanted.append((name, tv))
        if n_sl > catalog.MAX_SERVICE_LEVELS_PER_REQUEST:
            raise _bad("You can include up to 20 SERVICE_LEVEL metrics in a request")
        max_results = body.get("MaxResults", 100)
        if not isinstance(max_results, int) or not 1 <= max_results <= 100:
            raise _bad("MaxResults must be between 1 and 100")
        phash = self._params_hash(body, instance_id)
        offset = 0
        if (token := body.get("NextToken")) is not None:
            offset = self._read_token(str(token), phash)

        provisional = now - end < self.config.late_seconds
        self.served.append((int(start), int(end), provisional))
        self.queues_asked.append((now, frozenset(q.rsplit("/", 1)[-1] for q in filters.get("Queues", []))))
        frags, total = self.page_json(
            inst, int(start), int(end), groupings, filters, wanted, provisional, offset, max_results
        )
        if self.repeat_group_next > 0 and frags:
            self.repeat_group_next -= 1
            frags.append(frags[0])  # a malformed page: one dimension group twice
        body_out = b'{"MetricResults":[' + b",".join(frags) + b"]"
        if offset + max_results < total:
            body_out += b',"NextToken":' + orjson.dumps(self._make_token(phash, offset + max_results))
        return body_out + b"}"

    def page_json(
        self,
        inst: Instance,
        start: int,
        end: int,
        groupings: list[str],
        filters: dict[str, list[str]],
        wanted: list[tuple[str, float | None]],
        provisional: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[bytes], int]:
        """The JSON of results [offset, offset+limit) and the number of results in all.

        Serialized by hand from per-metric fragments: the same JSON as
        ``orjson.dumps(self.results(...))`` (a test checks), at a fraction of the cost."""
        prefixes = []
        for name, thr in wanted:
            spec = catalog.METRICS[name]
            metric: dict[str, Any] = {"Name": name, "Unit": spec.unit, "Statistic": spec.statistic}
            if thr is not None:
                metric["Threshold"] = {"Comparison": "LT", "ThresholdValue": thr}
            prefixes.append(b'{"Metric":' + orjson.dumps(metric))
        dumps = orjson.dumps
        frags: list[bytes] = []
        total = 0
        for key, dims in self.fleet.groups(inst, groupings, filters):
            shared = self._from_contacts(inst, start, end, groupings, key)
            state = self.fleet.group_state(inst, start, end, key) if shared is None else None
            if (shared is None and state is None) or (shared is not None and shared[1].queued == 0):
                continue
            if offset <= total < offset + limit:
                if shared is not None:
                    vals = self._shared_values(shared, wanted, provisional)
                else:
                    assert state is not None
                    vals = self.fleet.values_of(state, wanted, provisional)
                colls = b",".join(
                    p + b"}" if v is None else p + b',"Value":' + dumps(v) + b"}"
                    for p, v in zip(prefixes, vals, strict=True)
                )
                frags.append(b'{"Dimensions":' + dumps(dims) + b',"Collections":[' + colls + b"]}")
            total += 1
        return frags, total

    def _from_contacts(
        self, inst: Instance, start: int, end: int, groupings: list[str], key: tuple[str, ...]
    ) -> tuple[int, simv2.Contacts] | None:
        """A group by queue and channel over whole quarter hours of a queue that V2's agents
        serve: the contacts GetMetricDataV2 reports for it (and the group's hash), so that
        both APIs agree; None for any other group (its values are v1's own)."""
        if sorted(groupings) != ["CHANNEL", "QUEUE"] or start % simv2.BUCKET or end % simv2.BUCKET:
            return None
        parts = dict(k.split("=", 1) for k in key)
        found = self.v2.queue_contacts(inst, parts["QUEUE"], parts["CHANNEL"], start, end)
        if found is None:
            return None
        return fleet_hash(self.fleet.spec.seed, inst.id, start, end, key), found

    def _shared_values(
        self, shared: tuple[int, simv2.Contacts], wanted: list[tuple[str, float | None]], provisional: bool
    ) -> list[float | None]:
        h, found = shared
        return simv2.v1_values(found, h, wanted, METRIC_UNITS, METRIC_SALTS, provisional)

    def results(
        self,
        inst: Instance,
        start: int,
        end: int,
        groupings: list[str],
        filters: dict[str, list[str]],
        wanted: list[tuple[str, float | None]],
        provisional: bool = False,
    ) -> list[dict[str, Any]]:
        """Every result of a request in its stable order (inactive groups left out)."""
        out = []
        for key, dims in self.fleet.groups(inst, groupings, filters):
            shared = self._from_contacts(inst, start, end, groupings, key)
            if shared is None:
                vals = self.fleet.group_values(inst, start, end, key, wanted, provisional)
            elif shared[1].queued == 0:
                vals = None
            else:
                vals = [(n, t, v) for (n, t), v in zip(wanted, self._shared_values(shared, wanted, provisional),
                                                      strict=True)]
            if vals is None:
                continue
            colls = []
            for name, thr, value in vals:
                spec = catalog.METRICS[name]
                metric: dict[str, Any] = {"Name": name, "Unit": spec.unit, "Statistic": spec.statistic}
                if thr is not None:
                    metric["Threshold"] = {"Comparison": "LT", "ThresholdValue": thr}
                c: dict[str, Any] = {"Metric": metric}
                if value is not None:
                    c["Value"] = value
                colls.append(c)
            out.append({"Dimensions": dims, "Collections": colls})
        return out

    def list_queues(self, instance_id: str, region: str, query: Any) -> dict[str, Any]:
        inst = self._instance(instance_id, region)
        types = query.getall("queueTypes", [])
        for t in types:
            if t not in ("STANDARD", "AGENT"):
                raise _bad(f"QueueType {t} is not valid")
        max_results = int(query.get("maxResults", 100))
        if not 1 <= max_results <= 1000:
            raise _bad("maxResults must be between 1 and 1000")
        items = []
        if not types or "STANDARD" in types:
            items += [(q, n, "STANDARD") for q, n in inst.queues.items()]
        if not types or "AGENT" in types:
            items += [(q, n, "AGENT") for q, n in inst.agent_queues.items()]
        offset = 0
        if tok := query.get("nextToken"):
            try:
                offset = int(base64.urlsafe_b64decode(tok.encode()).decode())
            except Exception:
                raise _bad("The nextToken is not valid") from None
        page = items[offset : offset + max_results]
        out: dict[str, Any] = {
            "QueueSummaryList": [
                {"Id": q, "Arn": inst.queue_arn(q), "Name": n, "QueueType": t} for q, n, t in page
            ]
        }
        if offset + max_results < len(items):
            out["NextToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
        return out

    def list_instances(self, account: str, region: str, query: Any) -> dict[str, Any]:
        max_results = int(query.get("maxResults", 10))
        if not 1 <= max_results <= 10:
            raise _bad("maxResults must be between 1 and 10")
        insts = self.fleet.instances_of(account, region)
        offset = int(query.get("nextToken", "0") or 0)
        page = insts[offset : offset + max_results]
        out: dict[str, Any] = {
            "InstanceSummaryList": [
                {
                    "Id": i.id,
                    "Arn": i.arn,
                    "IdentityManagementType": "CONNECT_MANAGED",
                    "InstanceAlias": i.alias,
                    "CreatedTime": 1_700_000_000,
                    "ServiceRole": f"arn:aws:iam::{account}:role/aws-service-role/connect",
                    "InstanceStatus": "ACTIVE",
                    "InboundCallsEnabled": True,
                    "OutboundCallsEnabled": True,
                }
                for i in page
            ]
        }
        if offset + max_results < len(insts):
            out["NextToken"] = str(offset + max_results)
        return out

    # -- HTTP --------------------------------------------------------------------
    def _caller(self, request: web.Request) -> tuple[str, str]:
        """(access key id, Region) from the SigV4 Authorization header."""
        m = _CRED.search(request.headers.get("Authorization", ""))
        if not m:
            raise ApiFault(403, "AccessDeniedException", "Missing or malformed SigV4 Authorization")
        if m.group(3) != "connect":
            raise ApiFault(403, "InvalidSignatureException", "Signed for the wrong service")
        return m.group(1), m.group(2)

    def account_for_key(self, akid: str) -> str:
        if akid in self.key_accounts:
            return self.key_accounts[akid]
        m = re.fullmatch(r"SIM(\d{12})", akid)
        if m and m.group(1) in self.fleet.accounts:
            return m.group(1)
        if self.key_resolver is not None:
            account = self.key_resolver(akid)
            if account is None:
                raise ApiFault(403, "UnrecognizedClientException",
                               "The security token included in the request is invalid")
            if account not in self.fleet.accounts:
                raise ApiFault(403, "AccessDeniedException",
                               f"Account {account} has no access to Amazon Connect here")
            return account
        return self.fleet.accounts[0]

    def _check_caller(self, akid: str, inst: Instance | None) -> None:
        """With a key resolver, a caller may only reach its own account's instances."""
        if self.key_resolver is None or inst is None:
            return
        if self.account_for_key(akid) != inst.account:
            raise ApiFault(403, "AccessDeniedException",
                           f"Not authorized to access instance {inst.id}")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/metrics/historical/{instance_id}", self._h_get_metric_data)
        app.router.add_get("/queues-summary/{instance_id}", self._h_list_queues)
        app.router.add_get("/instance", self._h_list_instances)
        app.router.add_post("/metrics/data", self._h_get_metric_data_v2)
        app.router.add_get("/users-summary/{instance_id}", self._h_list_v2)
        app.router.add_post("/search-users", self._h_search_users)
        app.router.add_get("/routing-profiles-summary/{instance_id}", self._h_list_v2)
        app.router.add_get("/user-hierarchy-groups-summary/{instance_id}", self._h_list_v2)
        app.router.add_post("/metrics/current/{instance_id}", self._h_current)
        app.router.add_post("/metrics/userdata/{instance_id}", self._h_current)
        app.router.add_get("/_sim/stats", self._h_stats)
        app.router.add_post("/_sim/stats/reset", self._h_stats_reset)
        return app

    async def _respond(
        self, op: str, fn: Callable[[], dict[str, Any] | bytes | Awaitable[bytes]]
    ) -> web.Response:
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        try:
            body = fn()
            if inspect.isawaitable(body):  # work done off the event loop (a V2 result set)
                body = await body
        except ApiFault as f:
            self.stats.count(op, f.status, f.code)
            if f.status == 400:
                self.stats.bad_requests.append(f"{op}: {f.code}: {f.message}")
            return web.Response(
                status=f.status,
                body=orjson.dumps({"message": f.message}),
                headers={
                    "Content-Type": "application/json",
                    "x-amzn-ErrorType": f"{f.code}:http://internal.amazon.com/coral/com.amazonaws.connect/",
                },
            )
        self.stats.count(op, 200)
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return web.Response(body=raw, content_type="application/json")

    async def _h_get_metric_data(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        iid = request.match_info["instance_id"]
        if self.delay_next:
            await asyncio.sleep(self.delay_next.pop(0))
        if self.hold is not None and not self.hold.is_set():
            self.held += 1
            try:
                await self.hold.wait()
            finally:
                self.held -= 1
        if self.corrupt_next:
            self.stats.count("GetMetricData", 200)
            return web.Response(body=self.corrupt_next.pop(0), content_type="application/json")
        if self.reset_next > 0:
            self.reset_next -= 1
            self.stats.count("GetMetricData", 0, "ConnectionReset")
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 100_000
            await resp.prepare(request)
            await resp.write(b'{"MetricResults": [{"Dimensions": {')
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return resp

        def run() -> bytes:
            akid, region = self._caller(request)
            inst = self.fleet.instances.get(iid)
            self._check_caller(akid, inst)
            account = inst.account if inst else self.account_for_key(akid)
            self._gate("GetMetricData", account, region)
            self.stats.served_at[(account, region)].append(self.monotonic())
            self.stats.calls_by_account[account] += 1
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                raise ApiFault(400, "SerializationException", "The request body is not JSON") from None
            return self.get_metric_data(iid, region, body)

        return await self._respond("GetMetricData", run)

    async def _h_list_queues(self, request: web.Request) -> web.Response:
        iid = request.match_info["instance_id"]

        def run() -> dict[str, Any]:
            akid, region = self._caller(request)
            inst = self.fleet.instances.get(iid)
            self._check_caller(akid, inst)
            account = inst.account if inst else self.account_for_key(akid)
            self._gate("ListQueues", account, region)
            return self.list_queues(iid, region, request.query)

        return await self._respond("ListQueues", run)

    async def _h_list_instances(self, request: web.Request) -> web.Response:
        def run() -> dict[str, Any]:
            akid, region = self._caller(request)
            account = self.account_for_key(akid)
            self._gate("ListInstances", account, region)
            return self.list_instances(account, region, request.query)

        return await self._respond("ListInstances", run)

    # -- GetMetricDataV2 and its listings (collector.simulator.v2) ---------------------
    async def _h_get_metric_data_v2(self, request: web.Request) -> web.Response:
        raw = await request.read()

        def run() -> Awaitable[bytes]:
            akid, region = self._caller(request)
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                raise ApiFault(400, "SerializationException", "The request body is not JSON") from None
            if not isinstance(body, dict):
                raise ApiFault(400, "SerializationException", "The request body is not a JSON object")
            try:
                inst = self.v2.instance(body.get("ResourceArn"), region)
            except simv2.V2Fault as f:
                raise ApiFault(f.status, f.code, f.message) from None
            self._check_caller(akid, inst)
            self._gate("GetMetricDataV2", inst.account, region)
            self.stats.served_at_v2[(inst.account, region)].append(self.monotonic())
            self.stats.calls_by_account[inst.account] += 1
            return self._page_v2(inst, body)

        return await self._respond("GetMetricDataV2", run)

    async def _page_v2(self, inst: Instance, body: dict[str, Any]) -> bytes:
        """A V2 page on a worker thread: building a large result set does not stall the
        other accounts' requests (the quota, not the simulator, is what a bench measures)."""
        now = self.now()
        try:
            return await asyncio.to_thread(
                self.v2.page, inst, body, now, self._read_token, lambda h, o: self._make_token(h, o)
            )
        except simv2.V2Fault as f:
            raise ApiFault(f.status, f.code, f.message) from None

    async def _h_search_users(self, request: web.Request) -> web.Response:
        raw = await request.read()

        def run() -> dict[str, Any]:
            akid, region = self._caller(request)
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                raise ApiFault(400, "SerializationException", "The request body is not JSON") from None
            iid = str(body.get("InstanceId", "")) if isinstance(body, dict) else ""
            inst = self.fleet.instances.get(iid)
            self._check_caller(akid, inst)
            account = inst.account if inst else self.account_for_key(akid)
            self._gate("SearchUsers", account, region)
            inst = self._instance(iid, region)
            try:
                return simv2.search_users(inst, self.v2.world(inst), body)
            except simv2.V2Fault as f:
                raise ApiFault(f.status, f.code, f.message) from None

        return await self._respond("SearchUsers", run)

    async def _h_list_v2(self, request: web.Request) -> web.Response:
        iid = request.match_info["instance_id"]
        path = request.path
        op, key = (
            ("ListUsers", "UserSummaryList") if path.startswith("/users-summary/")
            else ("ListRoutingProfiles", "RoutingProfileSummaryList") if path.startswith("/routing-profiles-summary/")
            else ("ListUserHierarchyGroups", "UserHierarchyGroupSummaryList")
        )

        def run() -> dict[str, Any]:
            akid, region = self._caller(request)
            inst = self.fleet.instances.get(iid)
            self._check_caller(akid, inst)
            account = inst.account if inst else self.account_for_key(akid)
            try:
                self._gate(op, account, region)
            except ApiFault as f:
                self.stats.realtime_at[f"{op}:{account}:{f.status}"].append(self.now())
                raise
            self.stats.realtime_at[f"{op}:{account}:200"].append(self.now())
            inst = self._instance(iid, region)
            if op == "ListUsers":
                items = simv2.users(inst, self.v2.world(inst))
            elif op == "ListRoutingProfiles":
                items = simv2.routing_profiles(inst)
            else:
                items = simv2.hierarchy_groups(inst, self.v2.world(inst))
            try:
                return simv2.list_page(items, request.query, key)
            except simv2.V2Fault as f:
                raise ApiFault(f.status, f.code, f.message) from None

        return await self._respond(op, run)

    async def _h_current(self, request: web.Request) -> web.Response:
        """GetCurrentMetricData and GetCurrentUserData (collector.simulator.realtime)."""
        raw = await request.read()
        iid = request.match_info["instance_id"]
        op = "GetCurrentUserData" if request.path.startswith("/metrics/userdata/") else "GetCurrentMetricData"

        def run() -> dict[str, Any]:
            akid, region = self._caller(request)
            inst = self.fleet.instances.get(iid)
            self._check_caller(akid, inst)
            account = inst.account if inst else self.account_for_key(akid)
            try:
                self._gate(op, account, region)
            except ApiFault as f:
                self.stats.realtime_at[f"{op}:{account}:{f.status}"].append(self.now())
                raise
            self.stats.realtime_at[f"{op}:{account}:200"].append(self.now())
            inst = self._instance(iid, region)
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                raise ApiFault(400, "SerializationException", "The request body is not JSON") from None
            try:
                return self.realtime_page(op, inst, body)
            except simv2.V2Fault as f:
                raise ApiFault(f.status, f.code, f.message) from None

        return await self._respond(op, run)

    def realtime_page(self, op: str, inst: Instance, body: Any) -> dict[str, Any]:
        """One page of GetCurrentMetricData or GetCurrentUserData, at the snapshot its
        NextToken carries (the first page: now)."""
        req = simrt.validate_current(body) if op == "GetCurrentMetricData" else simrt.validate_user(body)
        snapshot, offset = round(self.now(), 3), 0
        if body.get("NextToken") is not None:
            snapshot, offset = self.rt_tokens.read(op, inst.id, body)

        def token(o: int) -> str:
            return self.rt_tokens.make(op, inst.id, body, snapshot, o)

        if isinstance(req, simrt.CurrentRequest):
            items = simrt.metric_results(inst, self.v2.world(inst), req, snapshot, self.realtime)
            return simrt.page_out(items, "MetricResults", offset, req.max_results, snapshot, token)
        users = simrt.user_data(inst, self.realtime.agents_now(inst, snapshot), req)
        return simrt.page_out(users, "UserDataList", offset, req.max_results, None, token)

    async def _h_stats_reset(self, request: web.Request) -> web.Response:
        """Start the counters afresh (the bench measures a second, warmed-up run)."""
        self.stats = Stats()
        return web.Response(status=204)

    async def _h_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats.as_dict()), content_type="application/json")

    # -- expectations for tests ------------------------------------------------------
    def expected(
        self,
        instance_id: str,
        start: datetime,
        end: datetime,
        groupings: list[str],
        filters: dict[str, list[str]],
        wanted: list[tuple[str, float | None]],
        provisional: bool = False,
    ) -> list[dict[str, Any]]:
        inst = self.fleet.instances[instance_id]
        return self.results(
            inst, int(start.timestamp()), int(end.timestamp()), groupings, filters, wanted, provisional
        )

    def expected_current(
        self,
        instance_id: str,
        snapshot_time: float,
        groupings: list[str],
        filters: dict[str, list[str]],
        metrics: list[str],
    ) -> list[tuple[dict[str, str], dict[str, float]]]:
        """What GetCurrentMetricData serves at ``snapshot_time`` (its DataSnapshotTime):
        (grouping -> id or channel, metric -> value) per group, in the order served.
        OLDEST_CONTACT_AGE is in seconds here, grouped or not (the wire sends milliseconds
        when not grouped)."""
        inst = self.fleet.instances[instance_id]
        body = {"Filters": filters, "Groupings": groupings,
                "CurrentMetrics": [{"Name": m, "Unit": simrt.METRICS[m]} for m in metrics]}
        req = simrt.validate_current(body)
        w = self.v2.world(inst)
        alive = self.realtime.contacts_between(inst, snapshot_time, snapshot_time + 1e-9)
        agents = self.realtime.agents_now(inst, snapshot_time)
        return [(key, simrt.current_values(inst, w, req, key, snapshot_time, alive, agents))
                for key, _dims in simrt.current_groups(inst, w, req)]

    def expected_user_data(
        self, instance_id: str, snapshot_time: float, filters: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The UserDataList GetCurrentUserData serves at ``snapshot_time`` (every page's
        entries, in order; timestamps as epoch seconds)."""
        inst = self.fleet.instances[instance_id]
        req = simrt.validate_user({"Filters": filters})
        return simrt.user_data(inst, self.realtime.agents_now(inst, snapshot_time), req)

    def agent_status_intervals(
        self, instance_id: str, start: float, end: float
    ) -> list[tuple[str, str, int, int]]:
        """(agent id, StatusName, from, to) of every status interval overlapping [start, end),
        whole (not clipped): what StatusName and StatusStartTimestamp say at each instant."""
        return self.realtime.status_intervals(self.fleet.instances[instance_id], start, end)

    def agent_acw_intervals(
        self, instance_id: str, start: float, end: float
    ) -> list[tuple[str, str, str, str, int, int]]:
        """(agent id, contact id, channel, queue, from, to) of every contact's after-contact
        work overlapping [start, end), whole: GetCurrentUserData lists the contact as ENDED
        (StateStartTimestamp ``from``) until ``to``."""
        return self.realtime.acw_intervals(self.fleet.instances[instance_id], start, end)

    def agent_activity_intervals(
        self, instance_id: str, start: int, end: int
    ) -> list[tuple[str, str, int, int]]:
        """(agent id, activity, from, to) clipped to [start, end): OFFLINE, NPT, ON_CONTACT,
        ACW or AVAILABLE, the states AGENTS_* count."""
        return self.realtime.activity_intervals(self.fleet.instances[instance_id], start, end)

    def contacts_in_queue(self, instance_id: str, t: float) -> list[simrt.Contact]:
        """The stream's contacts waiting in a queue at t."""
        inst = self.fleet.instances[instance_id]
        return [c for c in self.realtime.contacts_between(inst, t, t + 1e-9) if c.in_queue(t)]


@contextlib.asynccontextmanager
async def running_simulator(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``sim`` on a real socket for the duration; yields its base URL."""
    runner = web.AppRunner(sim.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
