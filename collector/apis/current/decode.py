"""GetCurrentMetricData and GetCurrentUserData responses (botocore's parsed shape) ->
rows and agent states; anything not of the documented shape is a MalformedResponse."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from collector.apis.current.model import AgentState, CurrentPage, Dims, MetricSet, UserPage
from collector.apis.v1.decode import dims_of
from collector.apis.wire import ref_id
from collector.errors import MalformedResponse

_LEVELS = ("LevelFive", "LevelFour", "LevelThree", "LevelTwo", "LevelOne")


def _time(v: Any, field: str) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return datetime.fromtimestamp(v, UTC)
    raise MalformedResponse(f"{field} is not a timestamp")


def _list(v: Any, field: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise MalformedResponse(f"{field} is not a list")
    return v


def current_page(out: Mapping[str, Any], metrics: MetricSet, grouped: bool) -> CurrentPage:
    """One page: a row per dimension group, values in the request's metric order.
    OLDEST_CONTACT_AGE comes in milliseconds when nothing is grouped: stored in seconds."""
    index = {name: i for i, (name, _u) in enumerate(metrics)}
    rows: list[tuple[Dims, list[float | None]]] = []
    for res in _list(out.get("MetricResults"), "MetricResults"):
        if not isinstance(res, Mapping):
            raise MalformedResponse("a MetricResults entry is not an object")
        values: list[float | None] = [None] * len(metrics)
        for c in _list(res.get("Collections"), "Collections"):
            m = c.get("Metric") if isinstance(c, Mapping) else None
            name = m.get("Name") if isinstance(m, Mapping) else None
            if name not in index:
                raise MalformedResponse(f"a Collections entry has a metric not asked for: {name!r}")
            v = c.get("Value")
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise MalformedResponse(f"{name} Value is {v!r}, not a finite number")
                v = float(v)
                if name == "OLDEST_CONTACT_AGE" and not grouped:
                    v /= 1000.0
            values[index[name]] = v
        rows.append((dims_of(res.get("Dimensions")), values))
    token = out.get("NextToken") or None
    return CurrentPage(metrics, rows, _time(out.get("DataSnapshotTime"), "DataSnapshotTime"), token)


def _counts(v: Any, field: str) -> dict[str, int]:
    if v is None:
        return {}
    if not isinstance(v, Mapping) or not all(isinstance(n, int) for n in v.values()):
        raise MalformedResponse(f"{field} is not a map of channel counts")
    return dict(sorted(v.items()))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def agent_state(u: Mapping[str, Any]) -> AgentState:
    if not isinstance(u, Mapping):
        raise MalformedResponse("a UserDataList entry is not an object")
    agent = ref_id(u.get("User"), "User")
    if not agent:
        raise MalformedResponse("a UserDataList entry has no User.Id")
    status = u.get("Status") or {}
    if not isinstance(status, Mapping):
        raise MalformedResponse("Status is not an object")
    path = u.get("HierarchyPath") or {}
    if not isinstance(path, Mapping):
        raise MalformedResponse("HierarchyPath is not an object")
    group = next((g for lvl in _LEVELS if (g := ref_id(path.get(lvl), f"HierarchyPath.{lvl}"))), None)
    contacts = []
    acw: list[tuple[str, datetime, str | None, str | None]] = []
    for c in _list(u.get("Contacts"), "Contacts"):
        if not isinstance(c, Mapping):
            raise MalformedResponse("a Contacts entry is not an object")
        since = _time(c.get("StateStartTimestamp"), "StateStartTimestamp")
        queue = ref_id(c.get("Queue"), "Contacts.Queue")
        cid = c.get("ContactId")
        if c.get("AgentContactState") == "ENDED" and since is not None and isinstance(cid, str) and cid:
            acw.append((cid, since, c.get("Channel"), queue))  # after-contact work since the contact ended
        contacts.append({
            "id": cid, "channel": c.get("Channel"), "state": c.get("AgentContactState"),
            "since": _iso(since),
            "connected": _iso(_time(c.get("ConnectedToAgentTimestamp"), "ConnectedToAgentTimestamp")),
            "queue_id": queue, "initiation": c.get("InitiationMethod"),
        })
    slots = {
        "available": _counts(u.get("AvailableSlotsByChannel"), "AvailableSlotsByChannel"),
        "active": _counts(u.get("ActiveSlotsByChannel"), "ActiveSlotsByChannel"),
        "max": _counts(u.get("MaxSlotsByChannel"), "MaxSlotsByChannel"),
    }
    return AgentState(
        agent, status.get("StatusName"), status.get("StatusArn"),
        _time(status.get("StatusStartTimestamp"), "Status.StatusStartTimestamp"),
        ref_id(u.get("RoutingProfile"), "RoutingProfile"), group, u.get("NextStatus"),
        orjson.dumps(contacts).decode(), orjson.dumps(slots).decode(), tuple(acw),
    )


def user_page(out: Mapping[str, Any]) -> UserPage:
    agents = [agent_state(u) for u in _list(out.get("UserDataList"), "UserDataList")]
    return UserPage(agents, out.get("NextToken") or None)
