"""``[collection]`` and ``[[profiles]]`` (``api = "v1"``, the default): a GetMetricData profile."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.apis.v1 import catalog
from collector.durations import parse_duration
from collector.validation import Section, keyword, suggest, unique, upper


class CollectionSettings(Section):
    granularity: str = "15m"
    groupings: list[str] = Field(default_factory=lambda: ["QUEUE", "CHANNEL"])
    channels: list[str] = Field(default_factory=lambda: list(catalog.CHANNELS))
    metrics: Literal["all"] | list[str] = "all"
    service_levels: list[int] = Field(default_factory=lambda: [20, 60])
    routing_profiles: list[str] = Field(default_factory=list)
    agent_statuses: list[str] = Field(default_factory=list)
    subtypes: list[str] = Field(default_factory=list)
    validation_test_types: list[str] = Field(default_factory=list)
    routing_step_expressions: list[str] = Field(default_factory=list)
    max_results: int = 100

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: str) -> str:
        seconds = parse_duration(v)
        if seconds <= 0 or seconds % catalog.SLICE_ALIGN_SECONDS:
            raise ValueError(f"{v!r} is not a multiple of 5 minutes")
        if seconds >= catalog.MAX_RANGE_SECONDS:
            raise ValueError(f"{v!r} is not under 24 hours")
        return v

    @field_validator("groupings", "channels", mode="before")
    @classmethod
    def _any_case(cls, v: Any) -> Any:
        return upper(v)

    @field_validator("metrics", mode="before")
    @classmethod
    def _all_or_list(cls, v: Any) -> Any:
        return keyword(v, "all", "metric names")

    @field_validator("groupings")
    @classmethod
    def _groupings(cls, v: list[str]) -> list[str]:
        for g in v:
            if g not in catalog.GROUPINGS:
                raise ValueError(f"unknown grouping {g!r}{suggest(g, catalog.GROUPINGS)}")
            if g in catalog.V1_UNSUPPORTED_GROUPINGS:
                raise ValueError(
                    f"grouping {g!r} is not valid for GetMetricData (v1); use GetMetricDataV2"
                )
        if len(v) > catalog.MAX_GROUPINGS:
            raise ValueError(f"{len(v)} groupings given; GetMetricData takes at most 2")
        return unique(v, "grouping")

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        for c in v:
            if c not in catalog.CHANNELS:
                raise ValueError(
                    f"unknown or unsupported channel {c!r}; supported: {', '.join(catalog.CHANNELS)}"
                )
        if not v:
            raise ValueError("at least one channel is needed")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if v == "all":
            return v
        out: list[str] = []
        for given in v:
            name = given.strip().upper() if given.strip().upper() in catalog.METRICS else given
            name = catalog.METRIC_ALIASES.get(name.upper(), name)
            if name not in catalog.METRICS:
                raise ValueError(f"unknown metric {name!r}{suggest(name, catalog.METRICS)}")
            if name not in out:
                out.append(name)
        if not out:
            raise ValueError("no metrics chosen")
        return out

    @field_validator("service_levels")
    @classmethod
    def _service_levels(cls, v: list[int]) -> list[int]:
        for t in v:
            if isinstance(t, bool) or not isinstance(t, int):
                raise ValueError(f"threshold {t!r} is not a whole number of seconds")
            if not catalog.THRESHOLD_MIN <= t <= catalog.THRESHOLD_MAX:
                raise ValueError(f"threshold {t} is outside 1..604800 seconds")
        if len(set(v)) != len(v):
            raise ValueError("a service-level threshold is repeated")
        return v

    @field_validator("routing_step_expressions")
    @classmethod
    def _rse(cls, v: list[str]) -> list[str]:
        if v:
            raise ValueError(
                "RoutingStepExpressions is not a valid filter for GetMetricData (v1); use GetMetricDataV2"
            )
        return v

    @field_validator("max_results")
    @classmethod
    def _max_results(cls, v: int) -> int:
        if not catalog.MAX_RESULTS_MIN <= v <= catalog.MAX_RESULTS_MAX:
            raise ValueError("must be between 1 and 100")
        return v

    @field_validator("routing_profiles", "agent_statuses", "subtypes", "validation_test_types")
    @classmethod
    def _filter_sizes(cls, v: list[str], info: Any) -> list[str]:
        key = {
            "routing_profiles": "RoutingProfiles",
            "agent_statuses": "AgentStatuses",
            "subtypes": "Subtypes",
            "validation_test_types": "ValidationTestTypes",
        }[info.field_name]
        _lo, hi = catalog.FILTER_LIMITS[key]
        if len(v) > hi:
            raise ValueError(f"{key} filter takes at most {hi} values, {len(v)} given")
        if any(not x for x in v):
            raise ValueError(f"{key} filter has an empty value")
        return v

    @model_validator(mode="after")
    def _service_level_needs_thresholds(self) -> CollectionSettings:
        if (
            isinstance(self.metrics, list)
            and catalog.SERVICE_LEVEL in self.metrics
            and not self.service_levels
        ):
            raise ValueError("SERVICE_LEVEL is chosen but service_levels is empty")
        return self

    @property
    def granularity_seconds(self) -> int:
        return parse_duration(self.granularity)

    def metric_names(self) -> list[str]:
        if self.metrics == "all":
            names = sorted(catalog.METRICS)
            if not self.service_levels:
                names.remove(catalog.SERVICE_LEVEL)
            return names
        return list(self.metrics)


class ProfileSettings(CollectionSettings):
    """A named collection profile: its own groupings, filters, metrics and granularity."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
