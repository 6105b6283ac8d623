"""Real-time requests: every limit of GetCurrentMetricData and GetCurrentUserData, checked
before a request leaves (the same checks the planner runs when it makes them)."""

from __future__ import annotations

from collections.abc import Sequence

from collector.apis.current import catalog
from collector.apis.current.model import CurrentRequest, UserDataRequest
from collector.errors import PlanErrorLive as PlanError


def batches(ids: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ids[i:i + n]) for i in range(0, len(ids), n)]


def check_current(r: CurrentRequest) -> None:
    """Raise PlanError naming the first GetCurrentMetricData limit ``r`` breaks."""
    f, g = r.filters, r.groupings
    if not r.instance_id or len(r.instance_id) > 100:
        raise PlanError("InstanceId must be 1 to 100 characters")
    if ("Queues" in f) == ("RoutingProfiles" in f):
        raise PlanError("Filters: exactly one of Queues and RoutingProfiles")
    for key, values in f.items():
        lo, hi = catalog.FILTER_LIMITS[key]
        if not lo <= len(values) <= hi:
            raise PlanError(f"Filters.{key}: {len(values)} values; the API takes {lo} to {hi}")
    if len(g) > catalog.MAX_GROUPINGS:
        raise PlanError(f"Groupings: {len(g)} given; at most {catalog.MAX_GROUPINGS}")
    if not r.metrics:
        raise PlanError("CurrentMetrics is empty")
    for name, unit in r.metrics:
        if catalog.METRICS.get(name) != unit:
            raise PlanError(f"CurrentMetrics: {name} with unit {unit} is not a real-time metric")
    if catalog.AGENT_STATUS in g and ([n for n, _u in r.metrics] != ["AGENTS_ONLINE"] or g[0] != catalog.QUEUE):
        raise PlanError("Groupings: AGENT_STATUS takes QUEUE first and only AGENTS_ONLINE")
    if "RoutingStepExpressions" in f and (len(f.get("Queues", ())) != 1
                                          or catalog.ROUTING_STEP_EXPRESSION not in g):
        raise PlanError("Filters.RoutingStepExpressions: exactly one queue and the ROUTING_STEP_EXPRESSION grouping")
    if not 1 <= r.max_results <= catalog.MAX_RESULTS:
        raise PlanError(f"MaxResults {r.max_results} is not 1 to {catalog.MAX_RESULTS}")


def check_user_data(r: UserDataRequest) -> None:
    """Raise PlanError naming the first GetCurrentUserData limit ``r`` breaks."""
    if not r.instance_id or len(r.instance_id) > 100:
        raise PlanError("InstanceId must be 1 to 100 characters")
    if len(r.filters) != 1:
        raise PlanError(f"Filters: exactly one of {', '.join(catalog.USER_FILTER_LIMITS)} ({len(r.filters)} given)")
    for key, values in r.filters.items():
        hi = catalog.USER_FILTER_LIMITS.get(key)
        if hi is None:
            raise PlanError(f"Filters.{key} is not a GetCurrentUserData filter")
        if not 1 <= len(values) <= hi:
            raise PlanError(f"Filters.{key}: {len(values)} values; the API takes 1 to {hi}")
    if len(r.contact_states) > len(catalog.CONTACT_STATES):
        raise PlanError("Filters.ContactFilter.ContactStates: at most 9")
    if not 1 <= r.max_results <= catalog.MAX_RESULTS:
        raise PlanError(f"MaxResults {r.max_results} is not 1 to {catalog.MAX_RESULTS}")
