"""Plain data of the GetMetricData path: requests, metric sets and dimension groups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.apis.wire import paged_request

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
        return paged_request(kwargs, self.groupings, next_token)
