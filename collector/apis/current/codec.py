"""How the real-time snapshots are keyed in the store. Queue gauges share GetMetricData's
dimension groups (the same seven columns, so a queue and channel is one ``dimension_sets``
row whichever API saw it) and have metric sets of their own (``current:`` + JSON); agent
states are stored by agent, outside the registries."""

from __future__ import annotations

import orjson

from collector.apis.current.model import Dims, MetricSet
from collector.ports import DimsColumns, MemberRow


class CurrentCodec:
    kind = "current"

    def dims_key(self, dims: Dims) -> str:
        return orjson.dumps(dims).decode()  # GetMetricData's key of the same group

    def dims_columns(self, dims: Dims) -> DimsColumns:
        return (*dims, None, None)

    def metric_set_signature(self, metrics: MetricSet) -> str:
        return "current:" + orjson.dumps([list(m) for m in metrics]).decode()

    def metric_set_members(self, metrics: MetricSet) -> list[MemberRow]:
        return [(name, None, unit, None, "current", None, None) for name, unit in metrics]


class AgentsCodec:
    """Agent states go to the agent tables whole; nothing of theirs is in the registries."""

    kind = "agents"

    def dims_key(self, dims: object) -> str:
        raise TypeError("agent states have no dimension group")

    def dims_columns(self, dims: object) -> DimsColumns:
        raise TypeError("agent states have no dimension group")

    def metric_set_signature(self, metrics: object) -> str:
        raise TypeError("agent states have no metric set")

    def metric_set_members(self, metrics: object) -> list[MemberRow]:
        raise TypeError("agent states have no metric set")


CURRENT = CurrentCodec()
AGENTS = AgentsCodec()
