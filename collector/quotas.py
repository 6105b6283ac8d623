"""Amazon Connect's published request quotas per account, Region and API, and the error
codes it throttles with (the limiter's defaults; ``[aws]`` and ``[[accounts]]`` override them)."""

from __future__ import annotations

from typing import Final

# (rate per second, burst)
DEFAULT_QUOTAS: Final[dict[str, tuple[float, int]]] = {
    "GetMetricData": (5.0, 8),
    "GetCurrentMetricData": (5.0, 8),
    # published as 5/s in places and 2/s in others: the safe reading (the adaptive limiter
    # and [aws] get_current_user_data_rate adapt it)
    "GetCurrentUserData": (2.0, 2),
    "GetMetricDataV2": (10.0, 10),
    "ListQueues": (10.0, 10),
    "ListInstances": (2.0, 5),
    # resource discovery (published defaults: 2/s, burst 5 for Connect's listing APIs)
    "ListUsers": (2.0, 5),
    "SearchUsers": (2.0, 5),
    "ListRoutingProfiles": (2.0, 5),
    "ListUserHierarchyGroups": (2.0, 5),
}

THROTTLING_CODES: Final = frozenset(
    {"ThrottlingException", "TooManyRequestsException", "Throttling", "ThrottledException"}
)
