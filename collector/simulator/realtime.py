"""GetCurrentMetricData and GetCurrentUserData of the simulator: "now", read from the
same contact stream as the historical data.

The stream (``collector.simulator.v2``): every (agent, queue, channel) cell and quarter
hour with traffic has ``handled`` contacts the agent answered after a queue wait, with
talk, hold and after-contact work, and ``abandoned`` more that left the queue. Here each
of those contacts gets an instant of arrival inside its quarter hour (a pure function
of the cell's hash), so it is, at any instant t:

- in queue from its arrival until it is answered (arrival + wait) or abandoned
  (arrival + abandon wait);
- CONNECTED to its agent from the answer for its talk and hold time (CONNECTED_ONHOLD
  during the hold, which sits in the middle of the talk), then ENDED for its
  after-contact work.

CONTACTS_QUEUED of a quarter hour (GetMetricDataV2, GetMetricData) is the number of
these contacts that arrived in it, so "in queue now" and "queued this interval" agree.

Each agent's status (what GetCurrentUserData says in Status.StatusName) is
``Available``, except for breaks (``Lunch``, ``Training``, ``Offline``) the agent takes
in the idle gaps between its contacts: a gap of at least 3 minutes inside a clock hour
holds a break that starts 60 s after the last contact's work ended and ends 60 s before
the next contact is answered (so every status lasts at least 60 s, and a contact may
wait in queue while its agent is on a break). Its activity follows: on contact while
any contact is connected, after-contact work while one is ENDED and none connected,
available otherwise; AGENTS_* count the agents in each.

Everything is a pure function of (seed, instance, instant): ``expected_*`` answer what
the endpoints serve, from the same code.

Choices where the API leaves room: GetCurrentUserData lists every agent the filter
selects, Offline ones too (StatusName ``Offline``); NextStatus is the break an agent on
a contact goes to once its work ends; every routing profile has 10 slots a channel (the
stream's agents overlap up to 8 contacts on one); AGENTS_ERROR and CONTACTS_SCHEDULED
are 0 (no missed or scheduled contacts are modelled); agents count in every queue they
serve and every channel (AGENTS_ON_CONTACT / AFTER_CONTACT_WORK only on the channels of
their contacts); without SortCriteria groups come in filter order; OLDEST_CONTACT_AGE
and ESTIMATED_WAIT_TIME are 0 with nobody waiting. ROUTING_STEP_EXPRESSION, SUBTYPE,
VALIDATION_TEST_TYPE and MetricId are refused as not modelled.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from collector.simulator.fleet import AGENT_STATUS_NAMES, Instance
from collector.simulator.v2 import BUCKET, Agent, MetricDataV2, V2Fault, World, _h, _id, contacts

TOKEN_TTL = 300  # a NextToken expires 5 minutes after it was made
HOUR = 3600
BREAK_MARGIN = 60  # a break starts this long after the agent's last work, ends this long before the next
MIN_BREAK_GAP = 3 * 60  # the shortest idle gap that holds a break
BREAKS = ("Lunch", "Training", "Offline")
AVAILABLE = "Available"
CHANNELS = ("VOICE", "CHAT", "TASK", "EMAIL")
SIM_CHANNELS = ("VOICE", "CHAT", "TASK")  # the channels the stream has contacts on
METRICS: dict[str, str] = {
    "AGENTS_ONLINE": "COUNT", "AGENTS_AVAILABLE": "COUNT", "AGENTS_ON_CALL": "COUNT",
    "AGENTS_NON_PRODUCTIVE": "COUNT", "AGENTS_AFTER_CONTACT_WORK": "COUNT", "AGENTS_ERROR": "COUNT",
    "AGENTS_STAFFED": "COUNT", "CONTACTS_IN_QUEUE": "COUNT", "OLDEST_CONTACT_AGE": "SECONDS",
    "CONTACTS_SCHEDULED": "COUNT", "AGENTS_ON_CONTACT": "COUNT", "SLOTS_ACTIVE": "COUNT",
    "SLOTS_AVAILABLE": "COUNT", "ESTIMATED_WAIT_TIME": "SECONDS",
}
GROUPINGS = ("QUEUE", "CHANNEL", "ROUTING_PROFILE", "ROUTING_STEP_EXPRESSION", "AGENT_STATUS", "SUBTYPE",
             "VALIDATION_TEST_TYPE")
MODELLED_GROUPINGS = ("QUEUE", "CHANNEL", "ROUTING_PROFILE", "AGENT_STATUS")
FILTER_LIMITS: dict[str, tuple[int, int]] = {
    "Queues": (1, 100), "RoutingProfiles": (1, 100), "Channels": (0, 4), "RoutingStepExpressions": (0, 50),
    "AgentStatuses": (0, 50), "Subtypes": (0, 10), "ValidationTestTypes": (0, 10),
}
NEED_ROUTING_PROFILE_FILTER = frozenset({"CONTACTS_SCHEDULED", "CONTACTS_IN_QUEUE", "OLDEST_CONTACT_AGE"})
USER_FILTER_LIMITS = {"Queues": 100, "RoutingProfiles": 100, "Agents": 100, "UserHierarchyGroups": 1}
CONTACT_STATES = ("INCOMING", "PENDING", "CONNECTING", "CONNECTED", "CONNECTED_ONHOLD", "MISSED", "ERROR",
                  "ENDED", "REJECTED")
LEVELS = ("LevelOne", "LevelTwo", "LevelThree", "LevelFour", "LevelFive")
# The concurrency of every routing profile: the stream's agents overlap up to 8 contacts on a
# channel, so every channel has 10 slots (Connect's most for chats and tasks).
MAX_SLOTS = {"VOICE": 10, "CHAT": 10, "TASK": 10}

# activities of an agent at an instant
OFFLINE, NPT, ON_CONTACT, ACW, IDLE = "OFFLINE", "NPT", "ON_CONTACT", "ACW", "AVAILABLE"


def _bad(msg: str) -> V2Fault:
    return V2Fault(400, "InvalidParameterException", msg)


def _invalid(msg: str) -> V2Fault:
    return V2Fault(400, "InvalidRequestException", msg)


def _last(v: str) -> str:
    return v.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact of the stream, with the instants of its life (epoch seconds)."""

    id: str
    agent: Agent
    queue: str
    channel: str
    arrived: int
    left_queue: int  # answered, or abandoned
    answered: bool
    hold_from: int  # CONNECTED_ONHOLD in [hold_from, hold_to)
    hold_to: int
    ended: int  # the agent's talk and hold end; after-contact work until acw_end
    acw_end: int

    def state(self, t: float) -> str | None:
        """The agent's state of this contact at t (None: not with the agent)."""
        if not self.answered or t < self.left_queue or t >= self.acw_end:
            return None
        if t >= self.ended:
            return "ENDED"
        if self.hold_from <= t < self.hold_to:
            return "CONNECTED_ONHOLD"
        return "CONNECTED"

    def in_queue(self, t: float) -> bool:
        return self.arrived <= t < self.left_queue


def cell_contacts(seed: int, agent: Agent, queue: str, channel: str, bucket: int) -> list[Contact]:
    """The contacts of one cell and quarter hour: the ones ``v2.contacts`` counts."""
    h = _h(seed, agent.id, queue, channel, bucket)
    if h % 10 >= 4:
        return []
    handled = 1 + (h >> 8) % 4
    c = contacts(h, handled)
    g = _h("contacts", h)
    b0 = bucket * BUCKET
    out = []
    for j in range(handled):  # the same terms v2.contacts sums
        wait = c.waits[j]
        talk = 60 + (g >> (24 + 5 * j)) % 32 * 15
        hold = (g >> (44 + 3 * j)) % 8 * 10
        acw = 10 + (g >> 56) % 8 * 5
        arrived = b0 + _h("arrive", h, j) % BUCKET
        answer = arrived + wait
        hold_from = answer + talk // 2
        out.append(Contact(_id(seed, agent.id, queue, channel, bucket, j), agent, queue, channel, arrived,
                           answer, True, hold_from, hold_from + hold, answer + talk + hold,
                           answer + talk + hold + acw))
    for j in range(c.abandoned):
        arrived = b0 + _h("arrive", h, "abandoned", j) % BUCKET
        left = arrived + c.abandon_wait // c.abandoned
        out.append(Contact(_id(seed, agent.id, queue, channel, bucket, "a", j), agent, queue, channel, arrived,
                           left, False, left, left, left, left))
    return out


# A contact lives at most this long after the start of its quarter hour.
_MAX_LIFE = BUCKET + 189 + 60 + 31 * 15 + 70 + 45 + 35


@dataclass(frozen=True, slots=True)
class AgentNow:
    agent: Agent
    status: str  # StatusName
    since: int  # StatusStartTimestamp
    next_status: str | None
    activity: str  # OFFLINE, NPT, ON_CONTACT, ACW, AVAILABLE
    contacts: tuple[tuple[Contact, str], ...]  # (contact, its state) with the agent now


def _activity(status: str, states: Sequence[str]) -> str:
    """What an agent in ``status`` with contacts in ``states`` counts as."""
    if status == "Offline":
        return OFFLINE
    if status != AVAILABLE:
        return NPT
    if any(s != "ENDED" for s in states):
        return ON_CONTACT
    return ACW if states else IDLE


class Realtime:
    """The real-time view of the simulated fleet (shares the worlds of ``MetricDataV2``)."""

    def __init__(self, v2: MetricDataV2) -> None:
        self.v2 = v2
        self.seed = v2.seed
        self._buckets: OrderedDict[tuple[str, int], list[Contact]] = OrderedDict()
        self._hours: OrderedDict[tuple[str, str, int], list[tuple[str, int, int]]] = OrderedDict()
        self._lock = threading.Lock()

    # -- the stream ----------------------------------------------------------------
    def bucket_contacts(self, inst: Instance, bucket: int) -> list[Contact]:
        """Every contact that arrived in one quarter hour of the instance."""
        key = (inst.id, bucket)
        with self._lock:
            found = self._buckets.get(key)
        if found is None:
            w = self.v2.world(inst)
            found = [c for a, q, ch in w.cells for c in cell_contacts(self.seed, a, q, ch, bucket)]
            with self._lock:
                self._buckets[key] = found
                while len(self._buckets) > 4096:
                    self._buckets.popitem(last=False)
        return found

    def contacts_between(self, inst: Instance, start: float, end: float) -> list[Contact]:
        """Every contact alive at some instant of [start, end)."""
        out = []
        for b in range((int(start) - _MAX_LIFE) // BUCKET, int(end) // BUCKET + 1):
            out += [c for c in self.bucket_contacts(inst, b)
                    if c.arrived < end and max(c.acw_end, c.left_queue) > start]
        return out

    # -- agents' statuses --------------------------------------------------------------
    def _hour_statuses(self, inst: Instance, agent: Agent, hour: int) -> list[tuple[str, int, int]]:
        """The agent's breaks in one clock hour: (name, from, to), in order."""
        key = (inst.id, agent.id, hour)
        with self._lock:
            found = self._hours.get(key)
        if found is not None:
            return found
        h0, h1 = hour * HOUR, (hour + 1) * HOUR
        busy = sorted((c.left_queue, c.acw_end) for c in self.contacts_between(inst, h0, h1)
                      if c.agent.id == agent.id and c.answered)
        gaps: list[tuple[int, int]] = []
        at = h0
        for a, b in busy:
            if a > at:
                gaps.append((at, min(a, h1)))
            at = max(at, b)
            if at >= h1:
                break
        if at < h1:
            gaps.append((at, h1))
        out = []
        for a, b in gaps:
            if b - a >= MIN_BREAK_GAP:
                name = BREAKS[_h(self.seed, "break", agent.id, a) % len(BREAKS)]
                out.append((name, a + BREAK_MARGIN, b - BREAK_MARGIN))
        with self._lock:
            self._hours[key] = out
            while len(self._hours) > 65536:
                self._hours.popitem(last=False)
        return out

    def _status_at(self, inst: Instance, agent: Agent, t: float) -> tuple[str, int, int]:
        """(StatusName, from, to) of the agent's status interval that holds t."""
        hour = int(t) // HOUR
        for name, a, b in self._hour_statuses(inst, agent, hour):
            if a <= t < b:
                return name, a, b
        # Available: from the end of the last break before t to the start of the next one
        since, until = None, None
        for hh in range(hour, hour - 24 * 30, -1):
            ends = [b for _n, _a, b in self._hour_statuses(inst, agent, hh) if b <= t]
            if ends:
                since = max(ends)
                break
        for hh in range(hour, hour + 24 * 30):
            starts = [a for _n, a, _b in self._hour_statuses(inst, agent, hh) if a > t]
            if starts:
                until = min(starts)
                break
        if since is None or until is None:  # an agent with no break in 30 days: not in this stream
            raise RuntimeError(f"agent {agent.id} has no break around {t}")
        return AVAILABLE, since, until

    def agent_now(self, inst: Instance, agent: Agent, t: float, alive: Iterable[Contact]) -> AgentNow:
        status, since, until = self._status_at(inst, agent, t)
        with_agent = tuple((c, s) for c in alive if c.agent.id == agent.id and (s := c.state(t)) is not None)
        activity = _activity(status, [s for _c, s in with_agent])
        next_status = None
        if with_agent and status == AVAILABLE:
            nxt = self._status_at(inst, agent, until)
            if nxt[0] != AVAILABLE and max(c.acw_end for c, _s in with_agent) + BREAK_MARGIN == until:
                next_status = nxt[0]  # the break the agent chose, once this work ends
        return AgentNow(agent, status, since, next_status, activity, with_agent)

    def agents_now(self, inst: Instance, t: float) -> list[AgentNow]:
        alive = [c for c in self.contacts_between(inst, t, t + 1e-9) if c.state(t) is not None]
        return [self.agent_now(inst, a, t, alive) for a in self.v2.world(inst).agents]

    def status_intervals(self, inst: Instance, start: float, end: float) -> list[tuple[str, str, int, int]]:
        """(agent id, StatusName, from, to) of every status interval that overlaps [start, end),
        with its whole extent (not clipped), by agent then time."""
        out = []
        for agent in self.v2.world(inst).agents:
            t: float = start
            while t < end:
                name, a, b = self._status_at(inst, agent, t)
                out.append((agent.id, name, a, b))
                t = b
        return out

    def acw_intervals(self, inst: Instance, start: float, end: float) -> list[tuple[str, str, str, str, int, int]]:
        """(agent id, contact id, channel, queue, from, to) of every contact's after-contact
        work that overlaps [start, end), whole, by agent then time: GetCurrentUserData lists
        the contact as ENDED from ``from`` (its StateStartTimestamp) until ``to``."""
        out = [(c.agent.id, c.id, c.channel, c.queue, c.ended, c.acw_end)
               for c in self.contacts_between(inst, start, end)
               if c.answered and c.ended < end and c.acw_end > start and c.acw_end > c.ended]
        order = {a.id: k for k, a in enumerate(self.v2.world(inst).agents)}
        return sorted(out, key=lambda x: (order[x[0]], x[4], x[1]))

    def activity_intervals(self, inst: Instance, start: int, end: int) -> list[tuple[str, str, int, int]]:
        """(agent id, activity, from, to) over [start, end) (clipped to it), by agent then time:
        the finer timeline behind AGENTS_* (OFFLINE, NPT, ON_CONTACT, ACW, AVAILABLE)."""
        alive = self.contacts_between(inst, start, end)
        every = self.status_intervals(inst, start, end)
        out: list[tuple[str, str, int, int]] = []
        for agent in self.v2.world(inst).agents:
            mine = sorted((c for c in alive if c.agent.id == agent.id and c.answered), key=lambda c: c.left_queue)
            edges = {start, end}
            for c in mine:
                edges.update(x for x in (c.left_queue, c.hold_from, c.hold_to, c.ended, c.acw_end)
                             if start < x < end)
            statuses = [(n, a, b) for ag, n, a, b in every if ag == agent.id]
            edges.update(x for _n, a, b in statuses for x in (a, b) if start < x < end)
            cuts = sorted(edges)
            k = j = 0
            active: list[Contact] = []
            for a, b in itertools.pairwise(cuts):
                while statuses[k][2] <= a:
                    k += 1
                while j < len(mine) and mine[j].left_queue <= a:
                    active.append(mine[j])
                    j += 1
                active = [c for c in active if c.acw_end > a]
                act = _activity(statuses[k][0], [s for c in active if (s := c.state(a)) is not None])
                if out and out[-1][0] == agent.id and out[-1][1] == act and out[-1][3] == a:
                    out[-1] = (agent.id, act, out[-1][2], b)
                else:
                    out.append((agent.id, act, a, b))
        return out


# -- GetCurrentMetricData ---------------------------------------------------------------
@dataclass(frozen=True)
class CurrentRequest:
    groupings: tuple[str, ...]
    filters: dict[str, tuple[str, ...]]  # ids (ARNs reduced), Channels as given
    metrics: tuple[str, ...]
    wire_metrics: tuple[dict[str, Any], ...]
    max_results: int
    sort: tuple[str, str] | None  # (metric, ASCENDING | DESCENDING)


def validate_current(body: Any) -> CurrentRequest:
    """The request, checked the way GetCurrentMetricData checks it."""
    if not isinstance(body, dict):
        raise V2Fault(400, "SerializationException", "The request body is not a JSON object")
    filters = body.get("Filters")
    if not isinstance(filters, dict):
        raise _bad("Filters is required")
    parsed: dict[str, tuple[str, ...]] = {}
    for key, values in filters.items():
        if key not in FILTER_LIMITS:
            raise V2Fault(400, "SerializationException", f"Unknown filter {key}")
        lo, hi = FILTER_LIMITS[key]
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise _bad(f"Filters.{key} must be a list of strings")
        if not lo <= len(values) <= hi:
            raise _bad(f"Filters.{key} must have between {lo} and {hi} items")
        if key == "Channels":
            for c in values:
                if c not in CHANNELS:
                    raise _bad(f"Filters.Channels: channel {c} is not valid")
        if len(set(values)) != len(values):
            raise _bad(f"Filters.{key} has duplicate values")
        parsed[key] = tuple(values if key == "Channels" else [_last(v) for v in values])
    if "Queues" in parsed and "RoutingProfiles" in parsed:
        raise _invalid("Filters: you cannot filter by both Queues and RoutingProfiles")
    if "Queues" not in parsed and "RoutingProfiles" not in parsed:
        raise _invalid("Filters: a Queues or RoutingProfiles filter is required")
    for key in ("AgentStatuses", "Subtypes", "ValidationTestTypes"):
        if parsed.get(key) and "Queues" not in parsed:
            raise _invalid(f"Filters.{key} requires Queues as the primary filter")
    if parsed.get("RoutingStepExpressions") or parsed.get("Subtypes") or parsed.get("ValidationTestTypes"):
        raise _bad("Filters: RoutingStepExpressions, Subtypes and ValidationTestTypes are not modelled by the simulator")
    groupings = body.get("Groupings") or []
    if not isinstance(groupings, list) or len(groupings) > 2:
        raise _bad("Groupings can have at most 2 items")
    for g in groupings:
        if g not in GROUPINGS:
            raise _bad(f"Groupings: {g} is not a valid grouping")
        if g not in MODELLED_GROUPINGS:
            raise _bad(f"Groupings: {g} is not modelled by the simulator")
    if len(set(groupings)) != len(groupings):
        raise _bad("Groupings must be unique")
    metrics = body.get("CurrentMetrics")
    if not isinstance(metrics, list) or not metrics:
        raise _bad("CurrentMetrics is required")
    names: list[str] = []
    for m in metrics:
        if not isinstance(m, dict):
            raise _bad("CurrentMetrics entries must be objects")
        if m.get("MetricId") is not None:
            raise _bad("CurrentMetrics: MetricId is not modelled by the simulator")
        name = m.get("Name")
        if name not in METRICS:
            raise _bad(f"CurrentMetrics: metric {name} is not valid")
        assert isinstance(name, str)
        if m.get("Unit") != METRICS[name]:
            raise _bad(f"CurrentMetrics: metric {name} requires Unit {METRICS[name]}")
        if name in names:
            raise _bad(f"CurrentMetrics: metric {name} is specified more than once")
        names.append(name)
    if "AGENT_STATUS" in groupings:
        if not groupings or groupings[0] != "QUEUE" or "Queues" not in parsed:
            raise _invalid("Groupings: AGENT_STATUS requires QUEUE as the primary grouping and a Queues filter")
        if names != ["AGENTS_ONLINE"]:
            raise _invalid("CurrentMetrics: with the AGENT_STATUS grouping the only metric available is AGENTS_ONLINE")
    if "ROUTING_PROFILE" in groupings:
        need = sorted(NEED_ROUTING_PROFILE_FILTER & set(names))
        if need and "RoutingProfiles" not in parsed:
            raise _invalid(f"CurrentMetrics: {', '.join(need)} grouped by ROUTING_PROFILE require a RoutingProfiles filter")
    if "ESTIMATED_WAIT_TIME" in names and (sorted(groupings) != ["CHANNEL", "QUEUE"] or "Queues" not in parsed
                                           or not parsed.get("Channels")):
        raise _invalid("CurrentMetrics: ESTIMATED_WAIT_TIME requires Queues and Channels filters and the "
                       "groupings QUEUE and CHANNEL")
    max_results = body.get("MaxResults", 100)
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 100:
        raise _bad("MaxResults must be between 1 and 100")
    sort = None
    crit = body.get("SortCriteria") or []
    if not isinstance(crit, list) or len(crit) > 1:
        raise _bad("SortCriteria can have at most 1 item")
    for c in crit:
        by, order = (c.get("SortByMetric"), c.get("SortOrder")) if isinstance(c, dict) else (None, None)
        if by not in METRICS or order not in ("ASCENDING", "DESCENDING"):
            raise _bad("SortCriteria: SortByMetric and SortOrder must be valid")
        if by in ("SLOTS_ACTIVE", "SLOTS_AVAILABLE"):
            raise _bad(f"SortCriteria: sorting on {by} is not supported")
        if by not in names:
            raise _bad(f"SortCriteria: {by} is not among the CurrentMetrics")
        sort = (str(by), str(order))
    wire = tuple({"Name": n, "Unit": METRICS[n]} for n in names)
    return CurrentRequest(tuple(groupings), parsed, tuple(names), wire, max_results, sort)


def _dimension_values(inst: Instance, w: World, g: str, f: dict[str, tuple[str, ...]]) -> list[tuple[str, Any]]:
    if g == "QUEUE":
        if "Queues" in f:
            return [(q, {"Id": q, "Arn": inst.queue_arn(q)}) for q in f["Queues"]
                    if q in inst.queues or q in inst.agent_queues]
        rps = set(f.get("RoutingProfiles", ()))
        qs = sorted({q for a in w.agents if a.routing_profile in rps for q in a.queues})
        return [(q, {"Id": q, "Arn": inst.queue_arn(q)}) for q in qs]
    if g == "CHANNEL":
        return [(c, c) for c in (f.get("Channels") or SIM_CHANNELS)]
    if g == "ROUTING_PROFILE":
        if "RoutingProfiles" in f:
            profiles = [r for r in f["RoutingProfiles"] if r in inst.routing_profiles]
        else:
            wanted = set(f.get("Queues", ()))
            profiles = [r for r in inst.routing_profiles
                        if any(a.routing_profile == r and wanted & set(a.queues) for a in w.agents)]
        return [(r, {"Id": r, "Arn": inst.routing_profile_arn(r)}) for r in profiles]
    assert g == "AGENT_STATUS"
    allowed = set(f.get("AgentStatuses", ()))
    return [(s, {"Arn": inst.agent_status_arn(s), "Id": s}) for s in inst.agent_statuses
            if not allowed or s in allowed]


_DIM_KEY = {"QUEUE": "Queue", "CHANNEL": "Channel", "ROUTING_PROFILE": "RoutingProfile", "AGENT_STATUS": "AgentStatus"}


def current_groups(inst: Instance, w: World, req: CurrentRequest) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every dimension group of the request: (grouping -> value id, wire Dimensions)."""
    combos: list[tuple[dict[str, str], dict[str, Any]]] = [({}, {})]
    for g in req.groupings:
        combos = [({**key, g: v}, {**dims, _DIM_KEY[g]: wire})
                  for key, dims in combos for v, wire in _dimension_values(inst, w, g, req.filters)]
    return combos


def current_values(inst: Instance, w: World, req: CurrentRequest, key: dict[str, str], t: float,
                   alive: Sequence[Contact], agents: Sequence[AgentNow]) -> dict[str, float]:
    """One group's values at t (OLDEST_CONTACT_AGE in seconds)."""
    f = req.filters
    channels = (key["CHANNEL"],) if "CHANNEL" in key else tuple(f.get("Channels") or SIM_CHANNELS)
    if "QUEUE" in key:
        queues = {key["QUEUE"]}
    elif "Queues" in f:
        queues = set(f["Queues"])
    else:
        rps = {key["ROUTING_PROFILE"]} if "ROUTING_PROFILE" in key else set(f["RoutingProfiles"])
        queues = {q for a in w.agents if a.routing_profile in rps for q in a.queues}
    rp_only = key.get("ROUTING_PROFILE") or None
    rp_filter = set(f.get("RoutingProfiles", ()))
    status_id = key.get("AGENT_STATUS")
    status_name = AGENT_STATUS_NAMES[inst.agent_statuses.index(status_id)] if status_id else None

    def member(a: AgentNow) -> bool:
        ag = a.agent
        if rp_only is not None and ag.routing_profile != rp_only:
            return False
        if rp_filter and ag.routing_profile not in rp_filter:
            return False
        if not queues & set(ag.queues) or not set(channels) & set(SIM_CHANNELS):
            return False
        return status_name is None or a.status == status_name

    mine = [a for a in agents if member(a)]
    waiting = [c for c in alive if c.queue in queues and c.channel in channels and c.in_queue(t)]
    out: dict[str, float] = {}
    for m in req.metrics:
        if m == "CONTACTS_IN_QUEUE":
            v: float = len(waiting)
        elif m == "OLDEST_CONTACT_AGE":
            v = float(round(t - min(c.arrived for c in waiting), 3)) if waiting else 0.0
        elif m == "ESTIMATED_WAIT_TIME":
            v = round(sum(c.left_queue - t for c in waiting) / len(waiting), 3) if waiting else 0.0
        elif m == "CONTACTS_SCHEDULED":
            v = 0
        elif m == "AGENTS_ONLINE":
            v = sum(1 for a in mine if a.activity != OFFLINE)
        elif m == "AGENTS_STAFFED":
            v = sum(1 for a in mine if a.activity in (IDLE, ON_CONTACT, ACW))
        elif m == "AGENTS_NON_PRODUCTIVE":
            v = sum(1 for a in mine if a.activity == NPT)
        elif m == "AGENTS_AVAILABLE":
            v = sum(1 for a in mine if a.activity == IDLE)
        elif m in ("AGENTS_ON_CONTACT", "AGENTS_ON_CALL"):
            v = sum(1 for a in mine if a.activity == ON_CONTACT
                    and any(s != "ENDED" and c.channel in channels for c, s in a.contacts))
        elif m == "AGENTS_AFTER_CONTACT_WORK":
            v = sum(1 for a in mine if a.activity == ACW and any(c.channel in channels for c, _s in a.contacts))
        elif m == "AGENTS_ERROR":
            v = 0
        elif m == "SLOTS_ACTIVE":
            v = sum(1 for a in mine for c, _s in a.contacts if c.channel in channels)
        else:  # SLOTS_AVAILABLE
            v = sum(slots(a)[0].get(ch, 0) for a in mine for ch in channels)
        out[m] = float(v)
    return out


def slots(a: AgentNow) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(available, active, max) slots by channel."""
    active = {ch: sum(1 for c, _s in a.contacts if c.channel == ch) for ch in MAX_SLOTS}
    routable = a.status == AVAILABLE
    available = {ch: max(0, n - active[ch]) if routable else 0 for ch, n in MAX_SLOTS.items()}
    return available, active, dict(MAX_SLOTS)


# -- GetCurrentUserData ---------------------------------------------------------------------
@dataclass(frozen=True)
class UserRequest:
    kind: str
    values: tuple[str, ...]
    states: tuple[str, ...]
    max_results: int


def validate_user(body: Any) -> UserRequest:
    if not isinstance(body, dict):
        raise V2Fault(400, "SerializationException", "The request body is not a JSON object")
    filters = body.get("Filters")
    if not isinstance(filters, dict):
        raise _bad("Filters is required")
    given = []
    states: tuple[str, ...] = ()
    for key, values in filters.items():
        if key == "ContactFilter":
            cs = values.get("ContactStates") if isinstance(values, dict) else None
            if cs is None:
                continue
            if not isinstance(cs, list) or len(cs) > len(CONTACT_STATES):
                raise _bad("Filters.ContactFilter.ContactStates can have at most 9 items")
            for s in cs:
                if s not in CONTACT_STATES:
                    raise _bad(f"Filters.ContactFilter.ContactStates: {s} is not a valid contact state")
            states = tuple(cs)
            continue
        if key not in USER_FILTER_LIMITS:
            raise V2Fault(400, "SerializationException", f"Unknown filter {key}")
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise _bad(f"Filters.{key} must be a list of strings")
        hi = USER_FILTER_LIMITS[key]
        if not 1 <= len(values) <= hi:
            raise _bad(f"Filters.{key} must have between 1 and {hi} items")
        given.append((key, tuple(_last(v) for v in values)))
    if len(given) != 1:
        raise _invalid("Filters: exactly one of Queues, RoutingProfiles, Agents and UserHierarchyGroups is required")
    max_results = body.get("MaxResults", 100)
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 100:
        raise _bad("MaxResults must be between 1 and 100")
    (kind, values), = given
    return UserRequest(kind, values, states, max_results)


def user_data(inst: Instance, agents: Sequence[AgentNow], req: UserRequest) -> list[dict[str, Any]]:
    """The UserDataList entries of the request (every agent the filter selects, in the
    order SearchUsers lists them)."""
    want = set(req.values)
    out = []
    for a in agents:
        ag = a.agent
        if req.kind == "Queues":
            keep = bool(want & set(ag.queues))
        elif req.kind == "RoutingProfiles":
            keep = ag.routing_profile in want
        elif req.kind == "Agents":
            keep = ag.id in want
        else:
            keep = bool(want & set(ag.hierarchy))
        if req.states and not any(s in req.states for _c, s in a.contacts):
            keep = False
        if keep:
            out.append(user_entry(inst, a))
    return out


def user_entry(inst: Instance, a: AgentNow) -> dict[str, Any]:
    ag = a.agent
    available, active, most = slots(a)
    entry: dict[str, Any] = {
        "User": {"Id": ag.id, "Arn": f"{inst.arn}/agent/{ag.id}"},
        "RoutingProfile": {"Id": ag.routing_profile, "Arn": inst.routing_profile_arn(ag.routing_profile)},
        "HierarchyPath": {lvl: {"Id": g, "Arn": f"{inst.arn}/agent-group/{g}"}
                          for lvl, g in zip(LEVELS, ag.hierarchy, strict=True)},
        "Status": {
            "StatusStartTimestamp": a.since,
            "StatusArn": inst.agent_status_arn(inst.agent_statuses[AGENT_STATUS_NAMES.index(a.status)]),
            "StatusName": a.status,
        },
        "AvailableSlotsByChannel": available,
        "MaxSlotsByChannel": most,
        "ActiveSlotsByChannel": active,
        "Contacts": [
            {
                "ContactId": c.id, "Channel": c.channel,
                "InitiationMethod": "API" if c.channel == "TASK" else "INBOUND",
                "AgentContactState": s,
                "StateStartTimestamp": c.ended if s == "ENDED" else c.left_queue,
                "ConnectedToAgentTimestamp": c.left_queue,
                "Queue": {"Id": c.queue, "Arn": inst.queue_arn(c.queue)},
            }
            for c, s in sorted(a.contacts, key=lambda cs: (cs[0].left_queue, cs[0].id))
        ],
    }
    if a.next_status:
        entry["NextStatus"] = a.next_status
    return entry


# -- pages -------------------------------------------------------------------------------------
class Tokens:
    """NextTokens bound to the request parameters and the snapshot, expiring after 300 s;
    refused as the historical endpoints refuse theirs."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now

    @staticmethod
    def params_hash(op: str, instance_id: str, body: dict[str, Any], snapshot: float) -> str:
        params = {k: v for k, v in body.items() if k != "NextToken"}
        raw = orjson.dumps([op, instance_id, params, snapshot], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()[:16]

    def make(self, op: str, instance_id: str, body: dict[str, Any], snapshot: float, offset: int) -> str:
        h = self.params_hash(op, instance_id, body, snapshot)
        raw = orjson.dumps({"h": h, "o": offset, "t": self.now(), "s": snapshot})
        return base64.urlsafe_b64encode(raw).decode()

    def read(self, op: str, instance_id: str, body: dict[str, Any]) -> tuple[float, int]:
        """(snapshot, offset) of the request's NextToken."""
        token = body.get("NextToken")
        try:
            data = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))
            offset, issued, snapshot, h = int(data["o"]), float(data["t"]), float(data["s"]), str(data["h"])
        except Exception:
            raise _bad("The NextToken is not valid") from None
        if h != self.params_hash(op, instance_id, body, snapshot):
            raise _bad("The NextToken was issued for different request parameters")
        if self.now() - issued > TOKEN_TTL:
            raise V2Fault(400, "InvalidRequestException", "The NextToken has expired")
        return snapshot, offset


def page_out(items: list[dict[str, Any]], key: str, offset: int, n: int, snapshot: float | None,
             token: Callable[[int], str]) -> dict[str, Any]:
    out: dict[str, Any] = {key: items[offset : offset + n], "ApproximateTotalCount": len(items)}
    if snapshot is not None:
        out["DataSnapshotTime"] = snapshot
    if offset + n < len(items):
        out["NextToken"] = token(offset + n)
    return out


def metric_results(inst: Instance, w: World, req: CurrentRequest, t: float, rt: Realtime) -> list[dict[str, Any]]:
    """Every MetricResults entry of the request at t, in the order they are paged."""
    alive = rt.contacts_between(inst, t, t + 1e-9)
    agents = rt.agents_now(inst, t)
    grouped = bool(req.groupings)
    rows = []
    for key, dims in current_groups(inst, w, req):
        vals = current_values(inst, w, req, key, t, alive, agents)
        rows.append((key, dims, vals))
    if req.sort is not None:
        by, order = req.sort
        rows.sort(key=lambda r: r[2][by], reverse=order == "DESCENDING")  # stable: ties keep the group order
    out = []
    for _key, dims, vals in rows:
        colls = []
        for m, wire in zip(req.metrics, req.wire_metrics, strict=True):
            v = vals[m]
            if m == "OLDEST_CONTACT_AGE" and not grouped:
                v = round(v * 1000.0, 3)  # the API's quirk: milliseconds when not grouped
            colls.append({"Metric": wire, "Value": v})
        out.append({"Dimensions": dims, "Collections": colls})
    return out
