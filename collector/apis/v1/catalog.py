"""What GetMetricData accepts: metrics, units, statistics, filters, groupings, limits.

Taken from the SDK reference and ``connect-api-facts.md``; where the reference
contradicts itself the facts file wins (``HOLD_TIME``, not ``AVG_HOLD_TIME``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    statistic: str


_COUNT_SUM = (
    "API_CONTACTS_HANDLED",
    "CALLBACK_CONTACTS_HANDLED",
    "CONTACTS_ABANDONED",
    "CONTACTS_AGENT_HUNG_UP_FIRST",
    "CONTACTS_CONSULTED",
    "CONTACTS_HANDLED",
    "CONTACTS_HANDLED_INCOMING",
    "CONTACTS_HANDLED_OUTBOUND",
    "CONTACTS_HOLD_ABANDONS",
    "CONTACTS_MISSED",
    "CONTACTS_QUEUED",
    "CONTACTS_TRANSFERRED_IN",
    "CONTACTS_TRANSFERRED_IN_FROM_QUEUE",
    "CONTACTS_TRANSFERRED_OUT",
    "CONTACTS_TRANSFERRED_OUT_FROM_QUEUE",
)
_SECONDS_AVG = (
    "ABANDON_TIME",
    "AFTER_CONTACT_WORK_TIME",
    "HANDLE_TIME",
    "HOLD_TIME",
    "INTERACTION_AND_HOLD_TIME",
    "INTERACTION_TIME",
    "QUEUE_ANSWER_TIME",
)

METRICS: Final[dict[str, MetricSpec]] = {
    **{n: MetricSpec(n, "COUNT", "SUM") for n in _COUNT_SUM},
    **{n: MetricSpec(n, "SECONDS", "AVG") for n in _SECONDS_AVG},
    "QUEUED_TIME": MetricSpec("QUEUED_TIME", "SECONDS", "MAX"),
    "OCCUPANCY": MetricSpec("OCCUPANCY", "PERCENT", "AVG"),
    "SERVICE_LEVEL": MetricSpec("SERVICE_LEVEL", "PERCENT", "AVG"),
}
SERVICE_LEVEL: Final = "SERVICE_LEVEL"
# Names in the reference's prose that the wire does not take, and what to send instead.
METRIC_ALIASES: Final[dict[str, str]] = {"AVG_HOLD_TIME": "HOLD_TIME"}

CHANNELS: Final = ("VOICE", "CHAT", "TASK")
CHANNELS_IN_ENUM: Final = ("VOICE", "CHAT", "TASK", "EMAIL")

# Grouping name -> (Dimensions key in results, Filters key)
GROUPINGS: Final[dict[str, tuple[str, str]]] = {
    "QUEUE": ("Queue", "Queues"),
    "CHANNEL": ("Channel", "Channels"),
    "ROUTING_PROFILE": ("RoutingProfile", "RoutingProfiles"),
    "ROUTING_STEP_EXPRESSION": ("RoutingStepExpression", "RoutingStepExpressions"),
    "AGENT_STATUS": ("AgentStatus", "AgentStatuses"),
    "SUBTYPE": ("Subtype", "Subtypes"),
    "VALIDATION_TEST_TYPE": ("ValidationTestType", "ValidationTestTypes"),
}
# Groupings v1 refuses (the reference: "not a valid filter for GetMetricData").
V1_UNSUPPORTED_GROUPINGS: Final = frozenset({"ROUTING_STEP_EXPRESSION"})
V1_UNSUPPORTED_FILTERS: Final = frozenset({"RoutingStepExpressions"})

# Filter key -> (min, max) items per request.
FILTER_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "Queues": (1, 100),
    "Channels": (1, 4),
    "RoutingProfiles": (1, 100),
    "AgentStatuses": (1, 50),
    "Subtypes": (1, 10),
    "ValidationTestTypes": (1, 10),
    "RoutingStepExpressions": (1, 50),
}

MAX_GROUPINGS: Final = 2
MAX_SERVICE_LEVELS_PER_REQUEST: Final = 20
THRESHOLD_MIN: Final = 1
THRESHOLD_MAX: Final = 604_800
MAX_RESULTS_MIN: Final = 1
MAX_RESULTS_MAX: Final = 100
SLICE_ALIGN_SECONDS: Final = 300
MAX_RANGE_SECONDS: Final = 24 * 3600  # the range must be strictly less than this
LOOKBACK_SECONDS: Final = 24 * 3600
NEXT_TOKEN_TTL_SECONDS: Final = 300

# Dimension columns of ``historical_metrics`` in the order rows carry them.
DIMENSION_COLUMNS: Final = (
    "queue_id",
    "channel",
    "routing_profile_id",
    "agent_status_id",
    "routing_step_expression",
    "subtype",
    "validation_test_type",
)
