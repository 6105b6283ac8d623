"""Plain data shared by the core modules (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# One dimension group: (queue_id, channel, routing_profile_id, agent_status_id,
# routing_step_expression, subtype, validation_test_type), None where not grouped.
Dims = tuple[str | None, str | None, str | None, str | None, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class MetricRequest:
    """One entry of ``HistoricalMetrics``."""

    name: str
    unit: str
    statistic: str
    threshold: float | None = None

    def to_api(self) -> dict[str, Any]:
        d: dict[str, Any] = {"Name": self.name, "Unit": self.unit, "Statistic": self.statistic}
        if self.threshold is not None:
            d["Threshold"] = {"Comparison": "LT", "ThresholdValue": float(self.threshold)}
        return d


MetricSet = tuple[MetricRequest, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """One Connect instance to collect, with the queues resolved."""

    instance_id: str
    region: str
    account: str
    queues: tuple[str, ...]
    aws_profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = "connect-collector"
    lease: int | None = None  # the generation of this replica's lease on (account, region)
    unresolved: str | None = None  # why it cannot be collected now: its slices fail with this reason

    @property
    def limiter_key(self) -> tuple[str, str]:
        return (self.account, self.region)

    @property
    def credentials_key(self) -> tuple[str | None, str | None, str | None, str]:
        return (self.aws_profile, self.role_arn, self.external_id, self.session_name)


@dataclass(frozen=True, slots=True)
class MetricDataRequest:
    """Exactly what one GetMetricData call sends (apart from NextToken)."""

    instance_id: str
    start: datetime
    end: datetime
    filters: dict[str, tuple[str, ...]]
    groupings: tuple[str, ...]
    metrics: MetricSet
    max_results: int = 100

    def to_api(self, next_token: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "InstanceId": self.instance_id,
            "StartTime": self.start,
            "EndTime": self.end,
            "Filters": {k: list(v) for k, v in self.filters.items()},
            "HistoricalMetrics": [m.to_api() for m in self.metrics],
            "MaxResults": self.max_results,
        }
        if self.groupings:
            kwargs["Groupings"] = list(self.groupings)
        if next_token:
            kwargs["NextToken"] = next_token
        return kwargs


@dataclass(frozen=True, slots=True)
class SliceKey:
    profile: str
    instance_id: str
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.instance_id}@{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class SliceWork:
    """One slice of one instance: every request needed to collect it whole."""

    key: SliceKey
    target: Target
    requests: tuple[MetricDataRequest, ...]


@dataclass(slots=True)
class RunSummary:
    slices_total: int = 0
    slices_done: int = 0
    slices_failed: int = 0
    rows_written: int = 0
    values_written: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    handed_over: int = 0  # slices of shards handed to another replica mid-run (not in slices_total)
