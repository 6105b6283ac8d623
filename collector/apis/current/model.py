"""Plain data of the real-time path: requests, pages, agent states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.apis.wire import paged_request

# One dimension group, as GetMetricData's: (queue, channel, routing profile, agent status,
# routing step expression, subtype, validation test type), None where not grouped.
Dims = tuple[str | None, str | None, str | None, str | None, str | None, str | None, str | None]
MetricSet = tuple[tuple[str, str], ...]  # (name, unit) in the request's order


@dataclass(frozen=True, slots=True)
class CurrentRequest:
    """Exactly what one GetCurrentMetricData call sends (apart from NextToken)."""

    instance_id: str
    filters: dict[str, tuple[str, ...]]
    groupings: tuple[str, ...]
    metrics: MetricSet
    max_results: int = 100

    def to_api(self, next_token: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "InstanceId": self.instance_id,
            "Filters": {k: list(v) for k, v in self.filters.items()},
            "CurrentMetrics": [{"Name": n, "Unit": u} for n, u in self.metrics],
            "MaxResults": self.max_results,
        }
        return paged_request(kwargs, self.groupings, next_token)


@dataclass(frozen=True, slots=True)
class UserDataRequest:
    """Exactly what one GetCurrentUserData call sends (apart from NextToken)."""

    instance_id: str
    filters: dict[str, tuple[str, ...]]
    contact_states: tuple[str, ...] = ()
    max_results: int = 100

    def to_api(self, next_token: str | None = None) -> dict[str, Any]:
        filters: dict[str, Any] = {k: list(v) for k, v in self.filters.items()}
        if self.contact_states:
            filters["ContactFilter"] = {"ContactStates": list(self.contact_states)}
        kwargs: dict[str, Any] = {"InstanceId": self.instance_id, "Filters": filters, "MaxResults": self.max_results}
        return paged_request(kwargs, (), next_token)


@dataclass(frozen=True, slots=True)
class CurrentPage:
    metrics: MetricSet
    rows: list[tuple[Dims, list[float | None]]]
    snapshot_at: datetime | None
    next_token: str | None


@dataclass(frozen=True, slots=True)
class AgentState:
    """One agent in a GetCurrentUserData snapshot."""

    agent_id: str
    status: str | None
    status_arn: str | None
    status_since: datetime | None
    routing_profile_id: str | None
    hierarchy_group_id: str | None  # the lowest level of its hierarchy path
    next_status: str | None
    contacts: str  # JSON: [{"id", "channel", "state", "since", "queue_id", "initiation"}]
    slots: str  # JSON: {"available": {...}, "active": {...}, "max": {...}} by channel
    # its contacts in after-contact work (AgentContactState ENDED): (contact id, since, channel, queue)
    acw: tuple[tuple[str, datetime, str | None, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class UserPage:
    agents: list[AgentState]
    next_token: str | None
