"""``[[profiles]] api = "current"`` (GetCurrentMetricData: queue gauges) and ``api = "agents"``
(GetCurrentUserData: each agent's state), polled every ``every``.

```toml
[[profiles]]
name = "queues_now"
api = "current"
every = "15s"                        # 5s to 5m, dividing an hour
groupings = ["QUEUE", "CHANNEL"]     # at most 2
metrics = ["CONTACTS_IN_QUEUE", "OLDEST_CONTACT_AGE", "AGENTS_AVAILABLE"]   # default: all but ESTIMATED_WAIT_TIME
[profiles.filters]
queues = "all"                       # or a list; 100 a request
channels = ["VOICE", "CHAT", "TASK"]

[[profiles]]
name = "agents_now"
api = "agents"
every = "15s"
[profiles.filters]                   # one of queues, routing_profiles, agents, hierarchy_group
routing_profiles = "all"             # the default: every agent has a routing profile
```
Every check names the key at fault; the request-level limits are checked again before
each request leaves (:mod:`collector.apis.current.planner`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.apis.current import catalog
from collector.durations import parse_duration
from collector.validation import Section, keyword, suggest, unique, upper

FilterValues = Literal["all"] | list[str]

# [profiles.filters] key -> the request's filter key.
CURRENT_FILTERS: dict[str, str] = {
    "queues": "Queues",
    "routing_profiles": "RoutingProfiles",
    "channels": "Channels",
    "agent_statuses": "AgentStatuses",
    "routing_step_expressions": "RoutingStepExpressions",
    "subtypes": "Subtypes",
    "validation_test_types": "ValidationTestTypes",
}
USER_FILTERS: dict[str, str] = {
    "queues": "Queues",
    "routing_profiles": "RoutingProfiles",
    "agents": "Agents",
    "hierarchy_group": "UserHierarchyGroups",
}
DISCOVERABLE = frozenset({"queues", "routing_profiles", "agents"})  # may be "all"


def _filters(**kw: FilterValues) -> dict[str, FilterValues]:
    return kw


def _every(v: str) -> str:
    s = parse_duration(v)
    if not catalog.MIN_EVERY <= s <= catalog.MAX_EVERY or 3600 % s:
        raise ValueError(f"{v!r}: a live period is 5s to 5m and divides an hour (e.g. 10s, 15s, 30s, 1m)")
    return v


def _filter_values(v: dict[str, Any], known: dict[str, str]) -> dict[str, FilterValues]:
    out: dict[str, FilterValues] = {}
    for key, values in v.items():
        if key not in known:
            raise ValueError(f"unknown filter {key!r}{suggest(key, known)}; known: {', '.join(known)}")
        if values == "all" or isinstance(values, str):
            if key not in DISCOVERABLE:
                raise ValueError(f"filters.{key} must be a list")
            out[key] = keyword(values, "all", "IDs")
            continue
        if not isinstance(values, list) or not values:
            raise ValueError(f"filters.{key} is empty; list values or use \"all\"")
        if any(not isinstance(x, str) or not x for x in values):
            raise ValueError(f"filters.{key} has an empty value")
        out[key] = unique(values, f"filters.{key} value")
    return out


class CurrentProfileSettings(Section):
    """A named GetCurrentMetricData profile."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    api: Literal["current"] = "current"
    every: str = "15s"
    metrics: list[str] = Field(default_factory=lambda: list(catalog.DEFAULT_METRICS))
    groupings: list[str] = Field(default_factory=lambda: [catalog.QUEUE, catalog.CHANNEL])
    filters: dict[str, FilterValues] = Field(default_factory=lambda: _filters(queues="all", channels=["VOICE", "CHAT", "TASK"]))
    max_results: int = Field(default=catalog.MAX_RESULTS, ge=1, le=catalog.MAX_RESULTS)

    _every = field_validator("every")(classmethod(lambda cls, v: _every(v)))

    @field_validator("metrics", "groupings", mode="before")
    @classmethod
    def _any_case(cls, v: Any) -> Any:
        return upper(v)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("metrics is empty; leave it out for the default set")
        for m in v:
            if m not in catalog.METRICS:
                raise ValueError(f"unknown real-time metric {m!r}{suggest(m, catalog.METRICS)}")
        return unique(v, "metric")

    @field_validator("groupings")
    @classmethod
    def _groupings(cls, v: list[str]) -> list[str]:
        for g in v:
            if g not in catalog.GROUPINGS:
                raise ValueError(f"unknown grouping {g!r}{suggest(g, catalog.GROUPINGS)}")
        if len(v) > catalog.MAX_GROUPINGS:
            raise ValueError(f"{len(v)} groupings given; GetCurrentMetricData takes at most 2")
        return unique(v, "grouping")

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("filters is a table, e.g. { queues = \"all\" }")
        v = {k: upper(x) if k == "channels" else x for k, x in v.items()}
        return _filter_values(v, CURRENT_FILTERS)

    @model_validator(mode="after")
    def _consistent(self) -> CurrentProfileSettings:
        f = self.filters
        if "queues" not in f and "routing_profiles" not in f:
            raise ValueError("filters: GetCurrentMetricData needs queues or routing_profiles")
        if "queues" in f and "routing_profiles" in f:
            raise ValueError("filters: give queues or routing_profiles, not both (GetCurrentMetricData)")
        for c in f.get("channels", []):
            if c not in catalog.CHANNELS:
                raise ValueError(f"filters.channels: unknown channel {c!r}; known: {', '.join(catalog.CHANNELS)}")
        for key in ("agent_statuses", "subtypes", "validation_test_types"):
            if key in f and "queues" not in f:
                raise ValueError(f"filters.{key} needs queues as the primary filter")
        for key, values in f.items():
            hi = catalog.FILTER_LIMITS[CURRENT_FILTERS[key]][1]
            if isinstance(values, list) and len(values) > hi and key not in ("queues", "routing_profiles"):
                raise ValueError(f"filters.{key}: {len(values)} values; GetCurrentMetricData takes at most {hi}")
        if "routing_step_expressions" in f and (not isinstance(f.get("queues"), list) or len(f["queues"]) != 1):
            raise ValueError("filters.routing_step_expressions needs exactly one queue in filters.queues")
        return self

    @model_validator(mode="after")
    def _groupings_fit(self) -> CurrentProfileSettings:
        f, g = self.filters, self.groupings
        if catalog.CHANNEL in g and "channels" not in f:
            raise ValueError("groupings: CHANNEL needs filters.channels")
        if catalog.AGENT_STATUS in g:
            if not g or g[0] != catalog.QUEUE or "queues" not in f:
                raise ValueError("groupings: AGENT_STATUS needs QUEUE as the first grouping and a queues filter")
            if self.metrics != ["AGENTS_ONLINE"]:
                raise ValueError("groupings: with AGENT_STATUS the only metric is AGENTS_ONLINE")
        for sub in (catalog.SUBTYPE, catalog.VALIDATION_TEST_TYPE):
            if sub in g and (g[0] != catalog.QUEUE or "queues" not in f):
                raise ValueError(f"groupings: {sub} needs QUEUE as the first grouping and a queues filter")
        if catalog.ROUTING_PROFILE in g:
            needs = sorted(catalog.NEED_ROUTING_PROFILE_FILTER & set(self.metrics))
            if needs and "routing_profiles" not in f:
                raise ValueError(f"groupings: ROUTING_PROFILE with {', '.join(needs)} needs filters.routing_profiles")
        if "routing_step_expressions" in f and catalog.ROUTING_STEP_EXPRESSION not in g:
            raise ValueError("filters.routing_step_expressions needs the ROUTING_STEP_EXPRESSION grouping")
        if "ESTIMATED_WAIT_TIME" in self.metrics and sorted(g) != [catalog.CHANNEL, catalog.QUEUE] \
                and g != [catalog.ROUTING_STEP_EXPRESSION]:
            raise ValueError("metrics: ESTIMATED_WAIT_TIME needs groupings [QUEUE, CHANNEL] or [ROUTING_STEP_EXPRESSION]")
        if "ESTIMATED_WAIT_TIME" in self.metrics and g == [catalog.ROUTING_STEP_EXPRESSION] \
                and len(f.get("channels", [])) != 1:
            raise ValueError("metrics: ESTIMATED_WAIT_TIME by ROUTING_STEP_EXPRESSION needs exactly one channel")
        return self

    @property
    def every_seconds(self) -> int:
        return parse_duration(self.every)


class AgentsProfileSettings(Section):
    """A named GetCurrentUserData profile."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    api: Literal["agents"] = "agents"
    every: str = "15s"
    filters: dict[str, FilterValues] = Field(default_factory=lambda: _filters(routing_profiles="all"))
    contact_states: list[str] = Field(default_factory=list)
    max_results: int = Field(default=catalog.MAX_RESULTS, ge=1, le=catalog.MAX_RESULTS)

    _every = field_validator("every")(classmethod(lambda cls, v: _every(v)))

    @field_validator("contact_states", mode="before")
    @classmethod
    def _states_case(cls, v: Any) -> Any:
        return upper(v)

    @field_validator("contact_states")
    @classmethod
    def _states(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in catalog.CONTACT_STATES:
                raise ValueError(f"unknown contact state {s!r}{suggest(s, catalog.CONTACT_STATES)}")
        return unique(v, "contact state")

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("filters is a table, e.g. { routing_profiles = \"all\" }")
        out = _filter_values(v, USER_FILTERS)
        if len(out) != 1:
            raise ValueError("filters: GetCurrentUserData takes exactly one of "
                             f"{', '.join(USER_FILTERS)} ({len(out)} given)")
        if len(out.get("hierarchy_group", [])) > 1:
            raise ValueError("filters.hierarchy_group takes one hierarchy group ID")
        return out

    @property
    def every_seconds(self) -> int:
        return parse_duration(self.every)
