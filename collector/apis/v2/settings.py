"""``[[profiles]] api = "v2"``: a GetMetricDataV2 profile.

```toml
[[profiles]]
name = "agents_15m"
api = "v2"
interval = "15m"                    # 15m | 30m | 1h | 1d | 1w
time_zone = "America/New_York"      # IANA; 1d/1w slices align to local midnight
groupings = ["AGENT", "QUEUE"]      # at most 4
metrics = [
  "CONTACTS_HANDLED",
  { name = "CONTACTS_HANDLED", metric_filters = [{ key = "INITIATION_METHOD", values = ["INBOUND"] }] },
  { name = "SERVICE_LEVEL", thresholds = [{ comparison = "LT", value = 20 }] },
]
[profiles.filters]
queues = "all"
channels = ["VOICE", "CHAT"]
```
Every check names the key at fault; the request-level limits are checked again by
:mod:`collector.apis.v2.planner` before any request leaves.
"""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from collector.apis.v2 import catalog
from collector.durations import parse_duration
from collector.validation import unique

# [profiles.filters] key -> the API's filter key.
FILTER_KEYS: dict[str, str] = {
    "queues": catalog.QUEUE,
    "routing_profiles": catalog.ROUTING_PROFILE,
    "agents": catalog.AGENT,
    "agent_hierarchy_level_one": catalog.HIERARCHY_LEVELS[0],
    "agent_hierarchy_level_two": catalog.HIERARCHY_LEVELS[1],
    "agent_hierarchy_level_three": catalog.HIERARCHY_LEVELS[2],
    "agent_hierarchy_level_four": catalog.HIERARCHY_LEVELS[3],
    "agent_hierarchy_level_five": catalog.HIERARCHY_LEVELS[4],
    "channels": catalog.CHANNEL,
}

FilterValues = Literal["all"] | list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdSettings(_Strict):
    comparison: Literal["LT", "LTE", "GT"]
    value: int = Field(ge=catalog.THRESHOLD_MIN, le=catalog.THRESHOLD_MAX)

    @field_validator("value", mode="before")
    @classmethod
    def _whole(cls, v: object) -> object:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError(f"threshold value {v!r} is not a whole number of seconds")
        return v


class MetricFilterSettings(_Strict):
    key: str
    values: list[str] = Field(min_length=1, max_length=catalog.MAX_METRIC_FILTER_VALUES)
    negate: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v not in catalog.METRIC_FILTER_KEYS:
            raise ValueError(
                f"unknown metric filter key {v!r}; known: {', '.join(sorted(catalog.METRIC_FILTER_KEYS))}"
            )
        return v


class MetricSettings(_Strict):
    """One metric of a V2 profile; each threshold becomes its own request entry."""

    name: str
    thresholds: list[ThresholdSettings] = Field(default_factory=list)
    metric_filters: list[MetricFilterSettings] = Field(
        default_factory=list, max_length=catalog.MAX_METRIC_FILTERS
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        catalog.spec(v)  # ValueError with the refusal message
        return v

    @model_validator(mode="after")
    def _fits_metric(self) -> MetricSettings:
        spec = catalog.METRICS[self.name]
        if spec.takes_threshold and not self.thresholds:
            raise ValueError(
                f"{self.name} needs thresholds, e.g. [{{comparison = \"{spec.thresholds[0]}\", value = 20}}]"
            )
        if self.thresholds and not spec.takes_threshold:
            raise ValueError(f"{self.name} takes no threshold")
        seen = set()
        for t in self.thresholds:
            if t.comparison not in spec.thresholds:
                raise ValueError(
                    f"{self.name} takes threshold comparisons {'/'.join(spec.thresholds)}, not {t.comparison}"
                )
            if (t.comparison, t.value) in seen:
                raise ValueError(f"{self.name}: threshold {t.comparison} {t.value} is repeated")
            seen.add((t.comparison, t.value))
        keys = [f.key for f in self.metric_filters]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: a metric filter key is repeated")
        for f in self.metric_filters:
            if f.key not in spec.metric_filter_keys:
                allowed = ", ".join(spec.metric_filter_keys) or "none"
                raise ValueError(f"{self.name} takes metric filter keys {allowed}, not {f.key}")
            if f.negate and not spec.negate:
                raise ValueError(f"{self.name}: negate is not applicable to its metric filters")
        return self


class V2ProfileSettings(_Strict):
    """A named GetMetricDataV2 profile."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    api: Literal["v2"]
    interval: Literal["15m", "30m", "1h", "1d", "1w"] = "15m"
    time_zone: str = "UTC"
    groupings: list[str] = Field(default_factory=list, max_length=catalog.MAX_GROUPINGS)
    filters: dict[str, FilterValues] = Field(default_factory=dict)
    metrics: list[str | MetricSettings] = Field(min_length=1)
    max_results: int = Field(default=100, ge=1, le=catalog.MAX_RESULTS_MAX)
    # how far back the scheduler starts a never-collected instance (up to 90d); default:
    # scheduler.initial_backfill
    initial_backfill: str | None = None

    @field_validator("initial_backfill")
    @classmethod
    def _backfill(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) > catalog.LOOKBACK_SECONDS:
            raise ValueError(f"initial_backfill {v!r} is beyond GetMetricDataV2's 90 days")
        return v

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if v != "UTC" and v not in available_timezones():
            raise ValueError(f"{v!r} is not an IANA time zone name (e.g. 'America/New_York')")
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone name") from None
        return v

    @field_validator("groupings")
    @classmethod
    def _groupings(cls, v: list[str]) -> list[str]:
        known = {g for s in catalog.METRICS.values() for g in s.groupings}
        for g in v:
            if g not in known:
                raise ValueError(f"unknown grouping {g!r}; known: {', '.join(sorted(known))}")
        return unique(v, "grouping")

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: dict[str, FilterValues]) -> dict[str, FilterValues]:
        for key, values in v.items():
            if key not in FILTER_KEYS:
                raise ValueError(f"unknown filter {key!r}; known: {', '.join(FILTER_KEYS)}")
            if isinstance(values, list):
                if not values:
                    raise ValueError(f"filters.{key} is empty; list IDs or use \"all\"")
                if any(not x for x in values):
                    raise ValueError(f"filters.{key} has an empty value")
                if len(set(values)) != len(values):
                    raise ValueError(f"filters.{key} repeats a value")
                if key == "channels":
                    for c in values:
                        if c not in catalog.CHANNELS:
                            raise ValueError(f"filters.channels: unknown channel {c!r}; known: {', '.join(catalog.CHANNELS)}")
        if not v:
            raise ValueError("a V2 profile needs filters, e.g. queues = \"all\"")
        if not any(FILTER_KEYS[k] in catalog.RESOURCE_FILTER_KEYS for k in v):
            raise ValueError(
                "GetMetricDataV2 needs a queues, routing_profiles, agents or agent_hierarchy_level_* filter"
            )
        if len(v) > catalog.MAX_FILTER_KEYS:
            raise ValueError(f"{len(v)} filter keys given; GetMetricDataV2 takes at most 5")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str | MetricSettings]) -> list[str | MetricSettings]:
        for i, m in enumerate(v):
            if isinstance(m, str):
                try:
                    MetricSettings(name=m)  # the same checks as a table
                except ValidationError as e:
                    msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
                    raise ValueError(f"metrics[{i}]: {msg}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> V2ProfileSettings:
        api_filters = {FILTER_KEYS[k] for k in self.filters}
        seen: set[str] = set()
        for m in self.metric_settings():
            spec = catalog.METRICS[m.name]
            for g in self.groupings:
                if g not in spec.groupings:
                    raise ValueError(f"metrics: {m.name} cannot be grouped by {g}")
            for f in sorted(api_filters):
                if f not in spec.filters:
                    raise ValueError(f"metrics: {m.name} cannot be filtered by {f}")
            key = m.model_dump_json()
            if key in seen:
                raise ValueError(f"metrics: {m.name} is listed twice with the same thresholds and filters")
            seen.add(key)
        return self

    # -- derived -----------------------------------------------------------------
    @property
    def interval_period(self) -> str:
        return catalog.INTERVALS[self.interval]

    def metric_settings(self) -> list[MetricSettings]:
        return [MetricSettings(name=m) if isinstance(m, str) else m for m in self.metrics]

    def api_filters(self) -> dict[str, FilterValues]:
        """API filter key -> values (or "all", resolved by discovery before planning)."""
        return {FILTER_KEYS[k]: v for k, v in self.filters.items()}
