"""Plain data of the GetMetricDataV2 path (no I/O here): requests, metric sets,
dimension groups and decoded pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.apis.wire import paged_request

# The result's whole Dimensions map as returned, as sorted (key, value) pairs.
DimsV2 = tuple[tuple[str, str], ...]
RowV2 = tuple[DimsV2, list[float | None]]


@dataclass(frozen=True, slots=True)
class MetricFilterV2:
    key: str
    values: tuple[str, ...]
    negate: bool = False

    def to_api(self) -> dict[str, Any]:
        return {"MetricFilterKey": self.key, "MetricFilterValues": list(self.values), "Negate": self.negate}


@dataclass(frozen=True, slots=True)
class MetricV2:
    """One entry of ``Metrics``: a name, at most one threshold, up to two metric filters."""

    name: str
    unit: str
    threshold: tuple[str, float] | None = None  # (comparison, value)
    metric_filters: tuple[MetricFilterV2, ...] = ()

    def to_api(self) -> dict[str, Any]:
        d: dict[str, Any] = {"Name": self.name}
        if self.threshold is not None:
            d["Threshold"] = [{"Comparison": self.threshold[0], "ThresholdValue": float(self.threshold[1])}]
        if self.metric_filters:
            d["MetricFilters"] = [f.to_api() for f in self.metric_filters]
        return d

    @property
    def match_key(self) -> MetricKey:
        return metric_key(self.name, self.threshold, [(f.key, f.values, f.negate) for f in self.metric_filters])


MetricSetV2 = tuple[MetricV2, ...]
# How a returned Metric object is matched to the request's entry.
MetricKey = tuple[str, tuple[str, float] | None, tuple[tuple[str, tuple[str, ...], bool], ...]]


def metric_key(
    name: str,
    threshold: tuple[str, float] | None,
    filters: list[tuple[str, tuple[str, ...], bool]],
) -> MetricKey:
    thr = None if threshold is None else (threshold[0], float(threshold[1]))
    return (name, thr, tuple(sorted((k, tuple(v), bool(n)) for k, v, n in filters)))


@dataclass(frozen=True, slots=True)
class V2Request:
    """Exactly what one GetMetricDataV2 call sends (apart from NextToken)."""

    resource_arn: str
    start: datetime
    end: datetime
    interval: str  # FIFTEEN_MIN | THIRTY_MIN | HOUR | DAY | WEEK
    time_zone: str
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    groupings: tuple[str, ...]
    metrics: MetricSetV2
    max_results: int = 100

    def to_api(self, next_token: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "ResourceArn": self.resource_arn,
            "StartTime": self.start,
            "EndTime": self.end,
            "Interval": {"TimeZone": self.time_zone, "IntervalPeriod": self.interval},
            "Filters": [{"FilterKey": k, "FilterValues": list(v)} for k, v in self.filters],
            "Metrics": [m.to_api() for m in self.metrics],
            "MaxResults": self.max_results,
        }
        return paged_request(kwargs, self.groupings, next_token)


@dataclass(slots=True)
class PageV2:
    """One decoded page: rows per interval start (epoch seconds), values follow ``metrics``."""

    metrics: MetricSetV2
    rows: list[tuple[int, int, RowV2]]  # (interval start, interval end, (dims, values))
    next_token: str | None = None
