"""How GetMetricDataV2's metric sets and dimension groups are keyed in the store's
registries: a V2 value lands in ``metric_values`` exactly as a v1 value does (a float8[]
per dimension group and metric set); what V2 adds lives in the registries: metric sets
with thresholds (LT/LTE/GT) and metric filters, dimension sets with the agent and the
whole Dimensions map. The keys are stable (``v2:`` + JSON), so stored ids stay valid."""

from __future__ import annotations

import orjson

from collector.apis.v2 import catalog
from collector.apis.v2.model import DimsV2, MetricSetV2
from collector.ports import DimsColumns, MemberRow


def _id(v: str | None) -> str | None:
    """Dimension values are IDs; take the ID where an ARN comes back."""
    return v.rsplit("/", 1)[-1] if v and v.startswith("arn:") else v


class V2Codec:
    kind = "interval"  # stored in metric_values

    def dims_key(self, dims: DimsV2) -> str:
        return "v2:" + orjson.dumps(dims).decode()

    def dims_columns(self, dims: DimsV2) -> DimsColumns:
        """(queue, channel, routing profile, agent status (none in V2), routing step
        expression, subtype, validation test type, agent, the Dimensions map)."""
        m = dict(dims)
        return (
            _id(m.get(catalog.QUEUE)), m.get(catalog.CHANNEL), _id(m.get(catalog.ROUTING_PROFILE)), None,
            m.get(catalog.ROUTING_STEP_EXPRESSION), m.get(catalog.SUBTYPE), m.get(catalog.VALIDATION_TEST_TYPE),
            _id(m.get(catalog.AGENT)), orjson.dumps(m).decode() if m else None,
        )

    def metric_set_signature(self, metrics: MetricSetV2) -> str:
        return "v2:" + orjson.dumps(
            [[m.name, m.unit, m.threshold, [[f.key, f.values, f.negate] for f in m.metric_filters]]
             for m in metrics]
        ).decode()

    def metric_set_members(self, metrics: MetricSetV2) -> list[MemberRow]:
        return [
            (m.name, None, m.unit, None if m.threshold is None else m.threshold[1], "v2",
             None if m.threshold is None else m.threshold[0],
             orjson.dumps([{"key": f.key, "values": list(f.values), "negate": f.negate}
                           for f in m.metric_filters]).decode() if m.metric_filters else None)
            for m in metrics
        ]


CODEC = V2Codec()
