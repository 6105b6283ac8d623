"""A GetMetricData slice as a unit of fetch work, and how its rows are keyed in the store."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from collector.apis.v1.model import Dims, MetricDataRequest, MetricSet
from collector.apis.v1.planner import check_request
from collector.errors import MalformedResponse
from collector.model import Fence, SliceKey, Target
from collector.ports import CompletedSlice, ConnectSource, DimsColumns, MemberRow, Rows

OPERATION = "GetMetricData"
Page = tuple[MetricSet, list[tuple[Dims, list[float | None]]]]

_DIMENSION_NAMES = ("Queue", "Channel", "RoutingProfile", "AgentStatus", "RoutingStepExpression",
                    "Subtype", "ValidationTestType")


class V1Codec:
    """GetMetricData's keys in the registries (``dimension_sets.key``, ``metric_sets.signature``)."""
    kind = "interval"  # stored in metric_values


    def dims_key(self, dims: Dims) -> str:
        return orjson.dumps(dims).decode()

    def dims_columns(self, dims: Dims) -> DimsColumns:
        return (*dims, None, None)

    def metric_set_signature(self, metrics: MetricSet) -> str:
        return orjson.dumps([[m.name, m.unit, m.statistic, m.threshold] for m in metrics]).decode()

    def metric_set_members(self, metrics: MetricSet) -> list[MemberRow]:
        return [(m.name, m.statistic, m.unit, m.threshold, "v1", None, None) for m in metrics]


CODEC = V1Codec()


@dataclass(frozen=True, slots=True)
class SliceWork:
    """One slice of one instance and every request that collects it whole."""

    key: SliceKey
    target: Target
    requests: tuple[MetricDataRequest, ...]

    @property
    def deadline(self) -> datetime | None:
        return None  # history: served until it ages out (the planner checks that)

    @property
    def operation(self) -> str:
        return OPERATION

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return (self.key,)

    def check(self, request: MetricDataRequest, now: datetime) -> None:
        check_request(request, now)

    async def page(self, source: ConnectSource, request: MetricDataRequest, token: str | None) -> tuple[Page, str | None]:
        rows, nxt = await source.get_metric_data(self.target, request, token)
        return (request.metrics, rows), nxt

    def assemble(self, pages: Sequence[Page], collected_at: datetime, fence: Fence | None) -> list[CompletedSlice]:
        unique_groups(pages)
        out: list[tuple[Hashable, Rows]] = [(ms, rows) for ms, rows in pages]
        return [CompletedSlice(self.key, out, collected_at, fence, CODEC)]


def unique_groups(pages: Sequence[Page]) -> None:
    """A dimension group appears once per metric set in a slice; a response that repeats
    one is malformed (storing it would collide with itself)."""
    seen: dict[MetricSet, set[Dims]] = {}
    for ms, rows in pages:
        groups = seen.setdefault(ms, set())
        for d, _v in rows:
            if d in groups:
                named = ", ".join(f"{n}={v}" for n, v in zip(_DIMENSION_NAMES, d, strict=False) if v is not None)
                raise MalformedResponse(f"the response repeats the dimension group {{{named or 'no dimensions'}}}")
            groups.add(d)
