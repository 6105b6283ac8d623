"""What GetCurrentMetricData and GetCurrentUserData accept (from the SDK's service model:
``../shared/reference/get_current_metric_data.txt`` and ``get_current_user_data.txt``)."""

from __future__ import annotations

from typing import Final

CURRENT_OPERATION: Final = "GetCurrentMetricData"
USER_DATA_OPERATION: Final = "GetCurrentUserData"

# metric -> unit
METRICS: Final[dict[str, str]] = {
    "AGENTS_ONLINE": "COUNT",
    "AGENTS_AVAILABLE": "COUNT",
    "AGENTS_ON_CALL": "COUNT",
    "AGENTS_NON_PRODUCTIVE": "COUNT",
    "AGENTS_AFTER_CONTACT_WORK": "COUNT",
    "AGENTS_ERROR": "COUNT",
    "AGENTS_STAFFED": "COUNT",
    "CONTACTS_IN_QUEUE": "COUNT",
    "OLDEST_CONTACT_AGE": "SECONDS",
    "CONTACTS_SCHEDULED": "COUNT",
    "AGENTS_ON_CONTACT": "COUNT",
    "SLOTS_ACTIVE": "COUNT",
    "SLOTS_AVAILABLE": "COUNT",
    "ESTIMATED_WAIT_TIME": "SECONDS",
}
# What a profile collects when it names no metrics: every metric valid with any queue
# grouping (ESTIMATED_WAIT_TIME takes only core-routing filter/grouping combinations).
DEFAULT_METRICS: Final = tuple(m for m in METRICS if m != "ESTIMATED_WAIT_TIME")

QUEUE, CHANNEL, ROUTING_PROFILE = "QUEUE", "CHANNEL", "ROUTING_PROFILE"
ROUTING_STEP_EXPRESSION, AGENT_STATUS = "ROUTING_STEP_EXPRESSION", "AGENT_STATUS"
SUBTYPE, VALIDATION_TEST_TYPE = "SUBTYPE", "VALIDATION_TEST_TYPE"
GROUPINGS: Final = (QUEUE, CHANNEL, ROUTING_PROFILE, ROUTING_STEP_EXPRESSION, AGENT_STATUS, SUBTYPE,
                    VALIDATION_TEST_TYPE)
MAX_GROUPINGS: Final = 2
CHANNELS: Final = ("VOICE", "CHAT", "TASK", "EMAIL")

# Filter key -> its (min, max) list length per request.
FILTER_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "Queues": (1, 100),
    "RoutingProfiles": (1, 100),
    "Channels": (0, 4),
    "RoutingStepExpressions": (0, 50),
    "AgentStatuses": (0, 50),
    "Subtypes": (0, 10),
    "ValidationTestTypes": (0, 10),
}
MAX_RESULTS: Final = 100
# Metrics that need a routing profile filter when grouped by ROUTING_PROFILE.
NEED_ROUTING_PROFILE_FILTER: Final = frozenset({"CONTACTS_SCHEDULED", "CONTACTS_IN_QUEUE", "OLDEST_CONTACT_AGE"})

# GetCurrentUserData: exactly one of these filters, each with at most this many values.
USER_FILTER_LIMITS: Final[dict[str, int]] = {
    "Queues": 100,
    "RoutingProfiles": 100,
    "Agents": 100,
    "UserHierarchyGroups": 1,
}
CONTACT_STATES: Final = ("INCOMING", "PENDING", "CONNECTING", "CONNECTED", "CONNECTED_ONHOLD", "MISSED",
                         "ERROR", "ENDED", "REJECTED")

# Period of a live profile: at least 5 s, at most 5 minutes, dividing an hour.
MIN_EVERY: Final = 5
MAX_EVERY: Final = 300
# A NextToken expires 5 minutes after it was made.
TOKEN_TTL: Final = 300
