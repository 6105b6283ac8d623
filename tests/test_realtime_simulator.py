"""GetCurrentMetricData and GetCurrentUserData of the simulator, through the real
aiobotocore client over loopback: paging at one snapshot, the request limits, the
quotas, the tokens' life, and the agreement of "now" with the contact stream the
historical APIs report (and of the agent counts with the agents' own states)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import botocore.session
import pytest
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import ClientError

from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from collector.simulator.fleet import Instance
from collector.simulator.realtime import METRICS
from tests.conftest import SimHandle, StartSim

# an instant inside the simulated day (epoch seconds, not on a quarter hour)
T0 = 1_764_000_000.25
CHANNELS = ["VOICE", "CHAT", "TASK"]
MODEL = botocore.session.get_session().get_service_model("connect")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _inst(sim: Simulator) -> Instance:
    return next(iter(sim.fleet.instances.values()))


@asynccontextmanager
async def _client(h: SimHandle, validate: bool = True) -> AsyncIterator[Any]:
    inst = _inst(h.sim)
    cfg = Config(retries={"total_max_attempts": 1}, parameter_validation=validate)
    async with AioSession().create_client("connect", region_name=inst.region, endpoint_url=h.url,
                                          config=cfg) as client:
        yield client


async def _start(start_sim: StartSim, clock: Clock, **fleet: Any) -> SimHandle:
    cfg = SimulatorConfig(fleet=FleetSpec(**{"queues_per_instance": 6, "agents_per_instance": 12, **fleet}),
                          throttle=False)
    return await start_sim(cfg, now=clock)


def _metrics(names: list[str] | None = None) -> list[dict[str, str]]:
    return [{"Name": n, "Unit": METRICS[n]} for n in (names or [m for m in METRICS if m != "ESTIMATED_WAIT_TIME"])]


def _conforms(shape: Any, value: Any, path: str = "") -> None:
    """``value`` (a parsed response) fits the service model's ``shape``: every key a member."""
    if shape.type_name == "structure":
        assert isinstance(value, dict), path
        for k, v in value.items():
            if k == "ResponseMetadata" and not path:
                continue
            assert k in shape.members, f"{path}.{k} is not in {shape.name}"
            _conforms(shape.members[k], v, f"{path}.{k}")
    elif shape.type_name == "list":
        assert isinstance(value, list), path
        for i, v in enumerate(value):
            _conforms(shape.member, v, f"{path}[{i}]")
    elif shape.type_name == "map":
        assert isinstance(value, dict), path
        for k, v in value.items():
            _conforms(shape.key, k, f"{path} key")
            _conforms(shape.value, v, f"{path}.{k}")
    elif shape.type_name == "timestamp":
        assert isinstance(value, dt.datetime), path
    elif shape.type_name == "string":
        assert isinstance(value, str), path
        if shape.enum:
            assert value in shape.enum, f"{path}: {value} not in the enum"
    elif shape.type_name in ("integer", "long"):
        assert isinstance(value, int), path
    elif shape.type_name == "double":
        assert isinstance(value, float | int), path


async def _all_pages(call: Callable[..., Any], **kw: Any) -> list[dict[str, Any]]:
    pages, token = [], None
    while True:
        page = await call(**kw, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if not token:
            return pages


def _key(dims: dict[str, Any]) -> dict[str, str]:
    names = {"Queue": "QUEUE", "Channel": "CHANNEL", "RoutingProfile": "ROUTING_PROFILE", "AgentStatus": "AGENT_STATUS"}
    return {names[k]: (v if isinstance(v, str) else v["Id"]) for k, v in dims.items()}


def _values(res: dict[str, Any]) -> dict[str, float]:
    return {c["Metric"]["Name"]: c["Value"] for c in res["Collections"]}


async def test_a_paged_request_returns_every_group_once_at_one_snapshot(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock, queues_per_instance=40)
    inst = _inst(h.sim)
    queues = sorted(inst.queues)
    out = MODEL.operation_model("GetCurrentMetricData").output_shape
    async with _client(h) as client:
        pages = []
        page = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": queues, "Channels": CHANNELS}, Groupings=["QUEUE", "CHANNEL"],
            CurrentMetrics=_metrics(), MaxResults=100)
        pages.append(page)
        while page.get("NextToken"):
            clock.t += 20  # the contacts move on; the pages stay at the first page's snapshot
            page = await client.get_current_metric_data(
                InstanceId=inst.id, Filters={"Queues": queues, "Channels": CHANNELS},
                Groupings=["QUEUE", "CHANNEL"], CurrentMetrics=_metrics(), MaxResults=100,
                NextToken=page["NextToken"])
            pages.append(page)
    for p in pages:
        _conforms(out, p)
    assert len(pages) == 2 and [len(p["MetricResults"]) for p in pages] == [100, 20]
    assert {p["DataSnapshotTime"].timestamp() for p in pages} == {T0}
    assert all(p["ApproximateTotalCount"] == 120 for p in pages)
    got = [(_key(r["Dimensions"]), _values(r)) for p in pages for r in p["MetricResults"]]
    assert len({tuple(sorted(k.items())) for k, _v in got}) == 120
    expected = h.sim.expected_current(inst.id, T0, ["QUEUE", "CHANNEL"], {"Queues": queues, "Channels": CHANNELS},
                                      [m["Name"] for m in _metrics()])
    assert got == expected
    assert sum(v["CONTACTS_IN_QUEUE"] for _k, v in got) > 0  # some contacts are waiting now
    later = h.sim.expected_current(inst.id, clock.t, ["QUEUE", "CHANNEL"],
                                   {"Queues": queues, "Channels": CHANNELS}, [m["Name"] for m in _metrics()])
    assert later != expected  # a second page at its own time would have told another story


def _ok_body(inst: Instance) -> dict[str, Any]:
    return {"InstanceId": inst.id, "Filters": {"Queues": sorted(inst.queues)[:2], "Channels": ["VOICE"]},
            "Groupings": ["QUEUE"], "CurrentMetrics": _metrics(["CONTACTS_IN_QUEUE", "AGENTS_ONLINE"])}


def _queues(n: int) -> list[str]:
    return [f"00000000-0000-0000-0000-{k:012d}" for k in range(n)]


@pytest.mark.parametrize(("change", "code", "field"), [
    ({"Filters": {"Queues": _queues(101)}}, "InvalidParameterException", "Filters.Queues"),
    ({"Filters": {"RoutingProfiles": _queues(101)}}, "InvalidParameterException", "Filters.RoutingProfiles"),
    ({"Filters": {"Queues": _queues(1), "RoutingProfiles": _queues(1)}}, "InvalidRequestException", "RoutingProfiles"),
    ({"Filters": {"Channels": ["VOICE"]}}, "InvalidRequestException", "Filters"),
    ({"Filters": {"Queues": _queues(1), "Channels": ["VOICE", "FAX"]}}, "InvalidParameterException", "Filters.Channels"),
    ({"Groupings": ["QUEUE", "CHANNEL", "ROUTING_PROFILE"]}, "InvalidParameterException", "Groupings"),
    ({"Groupings": ["QUEUE", "QUEUE"]}, "InvalidParameterException", "Groupings"),
    ({"Groupings": ["CUSTOMER"]}, "InvalidParameterException", "Groupings"),
    ({"Groupings": ["QUEUE", "AGENT_STATUS"]}, "InvalidRequestException", "AGENTS_ONLINE"),
    ({"Groupings": ["AGENT_STATUS"], "CurrentMetrics": _metrics(["AGENTS_ONLINE"])}, "InvalidRequestException",
     "QUEUE"),
    ({"Groupings": ["ROUTING_PROFILE"]}, "InvalidRequestException", "RoutingProfiles"),
    ({"CurrentMetrics": [{"Name": "CONTACTS_IN_QUEUE", "Unit": "SECONDS"}]}, "InvalidParameterException",
     "CurrentMetrics"),
    ({"CurrentMetrics": [{"Name": "CONTACTS_HANDLED", "Unit": "COUNT"}]}, "InvalidParameterException",
     "CurrentMetrics"),
    ({"CurrentMetrics": _metrics(["ESTIMATED_WAIT_TIME"])}, "InvalidRequestException", "ESTIMATED_WAIT_TIME"),
    ({"MaxResults": 101}, "InvalidParameterException", "MaxResults"),
    ({"SortCriteria": [{"SortByMetric": "SLOTS_ACTIVE", "SortOrder": "ASCENDING"}]}, "InvalidParameterException",
     "SortCriteria"),
])
async def test_each_current_metric_limit_gets_the_real_error(start_sim: StartSim, change: dict[str, Any], code: str,
                                                             field: str) -> None:
    h = await _start(start_sim, Clock(T0))
    inst = _inst(h.sim)
    async with _client(h, validate=False) as client:
        assert (await client.get_current_metric_data(**_ok_body(inst)))["MetricResults"]
        with pytest.raises(ClientError) as e:
            await client.get_current_metric_data(**{**_ok_body(inst), **change})
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert field in e.value.response["Error"]["Message"]


@pytest.mark.parametrize(("filters", "code", "field"), [
    ({}, "InvalidRequestException", "Filters"),
    ({"Queues": _queues(1), "Agents": _queues(1)}, "InvalidRequestException", "Filters"),
    ({"Queues": _queues(101)}, "InvalidParameterException", "Filters.Queues"),
    ({"RoutingProfiles": _queues(101)}, "InvalidParameterException", "Filters.RoutingProfiles"),
    ({"Agents": _queues(101)}, "InvalidParameterException", "Filters.Agents"),
    ({"UserHierarchyGroups": _queues(2)}, "InvalidParameterException", "Filters.UserHierarchyGroups"),
    ({"Queues": _queues(1), "ContactFilter": {"ContactStates": ["CONNECTED"] * 10}}, "InvalidParameterException",
     "ContactStates"),
    ({"Queues": _queues(1), "ContactFilter": {"ContactStates": ["ON_HOLD"]}}, "InvalidParameterException",
     "ContactStates"),
])
async def test_each_user_data_limit_gets_the_real_error(start_sim: StartSim, filters: dict[str, Any], code: str,
                                                        field: str) -> None:
    h = await _start(start_sim, Clock(T0))
    inst = _inst(h.sim)
    async with _client(h, validate=False) as client:
        ok = await client.get_current_user_data(InstanceId=inst.id, Filters={"Queues": sorted(inst.queues)[:1]})
        assert ok["UserDataList"]
        with pytest.raises(ClientError) as e:
            await client.get_current_user_data(InstanceId=inst.id, Filters=filters)
        with pytest.raises(ClientError) as e2:
            await client.get_current_user_data(InstanceId=inst.id, Filters={"Queues": _queues(1)}, MaxResults=101)
    assert e.value.response["Error"]["Code"] == code
    assert field in e.value.response["Error"]["Message"]
    assert e2.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "MaxResults" in e2.value.response["Error"]["Message"]


async def test_throttled_at_the_configured_burst_per_operation(start_sim: StartSim) -> None:
    cfg = SimulatorConfig(fleet=FleetSpec(queues_per_instance=3, agents_per_instance=4),
                          current_metric_data_rate=1.0, current_metric_data_burst=3,
                          current_user_data_rate=1.0, current_user_data_burst=2)
    mono = Clock(1000.0)
    h = await start_sim(cfg, now=Clock(T0), monotonic=mono)
    inst = _inst(h.sim)
    results: Counter[tuple[str, str]] = Counter()
    async with _client(h) as client:
        user_body = {"InstanceId": inst.id, "Filters": {"Queues": sorted(inst.queues)[:1]}}
        for _ in range(5):
            for op in ("current", "user"):
                try:
                    if op == "current":
                        await client.get_current_metric_data(**_ok_body(inst))
                    else:
                        await client.get_current_user_data(**user_body)
                    results[(op, "ok")] += 1
                except ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
                    results[(op, e.response["Error"]["Code"])] += 1
        mono.t += 1.0  # one more token each
        await client.get_current_metric_data(**_ok_body(inst))
        await client.get_current_user_data(InstanceId=inst.id, Filters={"Queues": sorted(inst.queues)[:1]})
    assert results == {("current", "ok"): 3, ("current", "ThrottlingException"): 2,
                       ("user", "ok"): 2, ("user", "ThrottlingException"): 3}
    assert SimulatorConfig().current_metric_data_rate == 5.0 and SimulatorConfig().current_metric_data_burst == 8


async def test_a_token_is_bound_to_its_request_and_expires_after_300_seconds(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock, agents_per_instance=6)
    inst = _inst(h.sim)
    body = {**_ok_body(inst), "MaxResults": 1}
    async with _client(h) as client:
        first = await client.get_current_metric_data(**body)
        token = first["NextToken"]
        clock.t += 299
        second = await client.get_current_metric_data(**body, NextToken=token)
        assert second["DataSnapshotTime"] == first["DataSnapshotTime"]
        assert _key(second["MetricResults"][0]["Dimensions"]) != _key(first["MetricResults"][0]["Dimensions"])
        with pytest.raises(ClientError) as other:
            await client.get_current_metric_data(**{**body, "Groupings": ["CHANNEL"]}, NextToken=token)
        clock.t += 2  # 301 s after the token was made
        with pytest.raises(ClientError) as old:
            await client.get_current_metric_data(**body, NextToken=token)
        users = await client.get_current_user_data(InstanceId=inst.id, Filters={"Queues": sorted(inst.queues)},
                                                   MaxResults=2)
        clock.t += 301
        with pytest.raises(ClientError) as old_user:
            await client.get_current_user_data(InstanceId=inst.id, Filters={"Queues": sorted(inst.queues)},
                                               MaxResults=2, NextToken=users["NextToken"])
        with pytest.raises(ClientError) as garbage:
            await client.get_current_metric_data(**body, NextToken="bm90IGEgdG9rZW4=")
    assert other.value.response["Error"]["Code"] == "InvalidParameterException"
    for e in (old, old_user):
        assert e.value.response["Error"] == {"Code": "InvalidRequestException", "Message": "The NextToken has expired"}
    assert garbage.value.response["Error"]["Code"] == "InvalidParameterException"


async def test_contacts_in_queue_agree_with_the_stream_the_historical_apis_sum(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock)
    sim, inst = h.sim, _inst(h.sim)
    queues = sorted(inst.queues)
    quarter = int(T0) - int(T0) % 900
    async with _client(h) as client:
        now = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": queues, "Channels": CHANNELS}, Groupings=["QUEUE", "CHANNEL"],
            CurrentMetrics=_metrics(["CONTACTS_IN_QUEUE", "OLDEST_CONTACT_AGE"]))
        flat = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": queues, "Channels": CHANNELS},
            CurrentMetrics=_metrics(["CONTACTS_IN_QUEUE", "OLDEST_CONTACT_AGE"]))
        v2 = await _all_pages(
            client.get_metric_data_v2, ResourceArn=inst.arn, StartTime=quarter - 900, EndTime=quarter,
            Filters=[{"FilterKey": "QUEUE", "FilterValues": queues}], Groupings=["QUEUE", "CHANNEL"],
            Metrics=[{"Name": "CONTACTS_QUEUED"}, {"Name": "AVG_QUEUE_ANSWER_TIME"}, {"Name": "CONTACTS_HANDLED"}])
    # the contacts waiting at the snapshot, from the stream, by queue and channel
    waiting = sim.contacts_in_queue(inst.id, T0)
    assert waiting and all(c.arrived <= T0 < c.left_queue for c in waiting)
    by_group = Counter((c.queue, c.channel) for c in waiting)
    served = {(k["QUEUE"], k["CHANNEL"]): v for r in now["MetricResults"]
              for k, v in [(_key(r["Dimensions"]), _values(r))]}
    assert {g: v["CONTACTS_IN_QUEUE"] for g, v in served.items() if v["CONTACTS_IN_QUEUE"]} == by_group
    for g, v in served.items():
        ages = [T0 - c.arrived for c in waiting if (c.queue, c.channel) == g]
        assert v["OLDEST_CONTACT_AGE"] == (round(max(ages), 3) if ages else 0)  # seconds, grouped
    (only,) = flat["MetricResults"]
    assert _values(only)["CONTACTS_IN_QUEUE"] == len(waiting)
    assert _values(only)["OLDEST_CONTACT_AGE"] == round(max(T0 - c.arrived for c in waiting) * 1000, 3)  # ms
    # the quarter before: the contacts of the stream that arrived in it are what V2 counts as queued,
    # their waits what it averages
    prev = sim.realtime.bucket_contacts(inst, quarter // 900 - 1)
    assert all(quarter - 900 <= c.arrived < quarter for c in prev)
    rows = [r for p in v2 for r in p["MetricResults"]]
    assert rows
    for r in rows:
        q, ch = r["Dimensions"]["QUEUE"], r["Dimensions"]["CHANNEL"]
        vals = {c["Metric"]["Name"]: c.get("Value") for c in r["Collections"]}
        mine = [c for c in prev if (c.queue, c.channel) == (q, ch)]
        answered = [c.left_queue - c.arrived for c in mine if c.answered]
        assert vals["CONTACTS_QUEUED"] == len(mine)
        assert vals["CONTACTS_HANDLED"] == len(answered)
        if answered:
            assert vals["AVG_QUEUE_ANSWER_TIME"] == round(sum(answered) / len(answered), 3)
    assert sum(len([c for c in prev if (c.queue, c.channel) == (r["Dimensions"]["QUEUE"], r["Dimensions"]["CHANNEL"])])
               for r in rows) == len(prev)


def _activity(u: dict[str, Any]) -> str:
    status = u["Status"]["StatusName"]
    if status == "Offline":
        return "OFFLINE"
    if status != "Available":
        return "NPT"
    states = {c["AgentContactState"] for c in u["Contacts"]}
    if states - {"ENDED"}:
        return "ON_CONTACT"
    return "ACW" if states else "AVAILABLE"


async def test_agent_counts_agree_with_the_agents_states_at_the_same_snapshot(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock, agents_per_instance=30)
    sim, inst = h.sim, _inst(h.sim)
    queues = sorted(inst.queues)
    # an instant with agents on a break and agents available, from the agents' timelines
    day = sim.agent_status_intervals(inst.id, T0 - 86400, T0)
    assert {n for _a, n, _f, _t in day} == {"Available", "Lunch", "Training", "Offline"}
    assert all(t - f >= 60 for _a, _n, f, t in day)
    acts = sim.agent_activity_intervals(inst.id, int(T0) - 86400, int(T0))
    picks = [t for t in range(int(T0) - 86400, int(T0), 97)
             if len({n for _a, n, f, e in acts if f <= t < e}) == 5]
    assert picks
    clock.t = picks[0] + 0.5
    snap = clock.t
    user_out = MODEL.operation_model("GetCurrentUserData").output_shape
    async with _client(h) as client:
        counts = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": queues}, Groupings=["QUEUE"],
            CurrentMetrics=_metrics(["AGENTS_ONLINE", "AGENTS_AVAILABLE", "AGENTS_ON_CONTACT", "AGENTS_ON_CALL",
                                     "AGENTS_AFTER_CONTACT_WORK", "AGENTS_NON_PRODUCTIVE", "AGENTS_STAFFED",
                                     "SLOTS_ACTIVE"]))
        by_status = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": queues}, Groupings=["QUEUE", "AGENT_STATUS"],
            CurrentMetrics=_metrics(["AGENTS_ONLINE"]))
        users = {}
        for q in queues:
            pages = await _all_pages(client.get_current_user_data, InstanceId=inst.id, Filters={"Queues": [q]},
                                     MaxResults=7)
            for p in pages:
                _conforms(user_out, p)
            users[q] = [u for p in pages for u in p["UserDataList"]]
    assert counts["DataSnapshotTime"].timestamp() == snap
    seen: Counter[str] = Counter()
    for r in counts["MetricResults"]:
        q = r["Dimensions"]["Queue"]["Id"]
        v = _values(r)
        act = Counter(_activity(u) for u in users[q])
        seen.update(act)
        assert v["AGENTS_ONLINE"] == len(users[q]) - act["OFFLINE"]
        assert v["AGENTS_AVAILABLE"] == act["AVAILABLE"]
        assert v["AGENTS_ON_CONTACT"] == v["AGENTS_ON_CALL"] == act["ON_CONTACT"]
        assert v["AGENTS_AFTER_CONTACT_WORK"] == act["ACW"]
        assert v["AGENTS_NON_PRODUCTIVE"] == act["NPT"]
        assert v["AGENTS_STAFFED"] == act["AVAILABLE"] + act["ON_CONTACT"] + act["ACW"]
        assert v["SLOTS_ACTIVE"] == sum(len(u["Contacts"]) for u in users[q])
    assert set(seen) == {"OFFLINE", "NPT", "ON_CONTACT", "ACW", "AVAILABLE"}
    names = dict(zip(inst.agent_statuses, ("Available", "Offline", "Lunch", "Training"), strict=True))
    for r in by_status["MetricResults"]:
        q, status = r["Dimensions"]["Queue"]["Id"], names[r["Dimensions"]["AgentStatus"]["Id"]]
        online = sum(1 for u in users[q] if u["Status"]["StatusName"] == status != "Offline")
        assert _values(r)["AGENTS_ONLINE"] == online
    # the activity timeline says the same at the snapshot
    at_snap = {a: n for a, n, f, t in sim.agent_activity_intervals(inst.id, int(snap) - 600, int(snap) + 600)
               if f <= snap < t}
    assert at_snap == {u["User"]["Id"]: _activity(u) for us in users.values() for u in us}
    # each agent's status started when its timeline says, and says what the agent does
    now_intervals = {(a, n): (f, t) for a, n, f, t in sim.agent_status_intervals(inst.id, snap, snap + 1)}
    everyone = {u["User"]["Id"]: u for us in users.values() for u in us}
    assert len(everyone) == 30
    for agent, u in everyone.items():
        start, end = now_intervals[(agent, u["Status"]["StatusName"])]
        assert u["Status"]["StatusStartTimestamp"].timestamp() == start <= snap < end
        assert u["HierarchyPath"]["LevelFive"]["Id"] and u["RoutingProfile"]["Id"] in inst.routing_profiles
        for c in u["Contacts"]:
            assert c["ConnectedToAgentTimestamp"] <= c["StateStartTimestamp"] <= counts["DataSnapshotTime"]
    chosen = sorted(everyone)[:5]
    assert [u["User"]["Id"] for u in sim.expected_user_data(inst.id, snap, {"Agents": chosen})] == \
        [a.id for a in sim.v2.world(inst).agents if a.id in chosen]


async def test_user_data_pages_agents_once_as_search_users_reports_them(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock, agents_per_instance=105)
    sim, inst = h.sim, _inst(h.sim)
    async with _client(h) as client:
        pages = []
        page = await client.get_current_user_data(InstanceId=inst.id, Filters={"RoutingProfiles": inst.routing_profiles})
        pages.append(page)
        clock.t += 40
        page = await client.get_current_user_data(InstanceId=inst.id, Filters={"RoutingProfiles": inst.routing_profiles},
                                                  NextToken=page["NextToken"])
        pages.append(page)
        search = await _all_pages(client.search_users, InstanceId=inst.id)
    assert [len(p["UserDataList"]) for p in pages] == [100, 5] and "NextToken" not in pages[1]
    got = [u for p in pages for u in p["UserDataList"]]
    listed = [u for p in search for u in p["Users"]]
    assert [u["User"]["Id"] for u in got] == [u["Id"] for u in listed]
    for u, s in zip(got, listed, strict=True):
        assert u["RoutingProfile"]["Id"] == s["RoutingProfileId"]
        assert u["HierarchyPath"]["LevelFive"]["Id"] == s["HierarchyGroupId"]
    # both pages are the snapshot of the first request
    assert [orjson_safe(u) for u in got] == [orjson_safe(u) for u in
                                             sim.expected_user_data(inst.id, T0, {"RoutingProfiles": inst.routing_profiles})]
    assert sim.expected_user_data(inst.id, T0, {"RoutingProfiles": inst.routing_profiles}) != \
        sim.expected_user_data(inst.id, clock.t, {"RoutingProfiles": inst.routing_profiles})


def orjson_safe(u: Any) -> Any:
    """Parsed timestamps as epoch seconds, to compare a parsed entry with the simulator's."""
    if isinstance(u, dict):
        return {k: orjson_safe(v) for k, v in u.items()}
    if isinstance(u, list):
        return [orjson_safe(v) for v in u]
    if isinstance(u, dt.datetime):
        return u.timestamp()
    return u


async def test_routing_profile_groups_sorting_and_contact_filter(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock)
    sim, inst = h.sim, _inst(h.sim)
    rps = inst.routing_profiles
    async with _client(h) as client:
        by_rp = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"RoutingProfiles": rps}, Groupings=["ROUTING_PROFILE"],
            CurrentMetrics=_metrics(["AGENTS_ONLINE", "AGENTS_STAFFED", "CONTACTS_IN_QUEUE"]))
        users = {rp: (await client.get_current_user_data(InstanceId=inst.id, Filters={"RoutingProfiles": [rp]}))
                 ["UserDataList"] for rp in rps}
        ranked = await client.get_current_metric_data(
            InstanceId=inst.id, Filters={"Queues": sorted(inst.queues)}, Groupings=["QUEUE"],
            CurrentMetrics=_metrics(["AGENTS_ONLINE", "CONTACTS_IN_QUEUE"]),
            SortCriteria=[{"SortByMetric": "CONTACTS_IN_QUEUE", "SortOrder": "DESCENDING"}])
        ended = await client.get_current_user_data(
            InstanceId=inst.id, Filters={"RoutingProfiles": rps, "ContactFilter": {"ContactStates": ["ENDED"]}})
    assert [r["Dimensions"]["RoutingProfile"]["Id"] for r in by_rp["MetricResults"]] == rps
    waiting = sim.contacts_in_queue(inst.id, T0)
    for r in by_rp["MetricResults"]:
        rp, v = r["Dimensions"]["RoutingProfile"]["Id"], _values(r)
        assert v["AGENTS_ONLINE"] == sum(1 for u in users[rp] if u["Status"]["StatusName"] != "Offline")
        assert v["AGENTS_STAFFED"] == sum(1 for u in users[rp] if _activity(u) in ("AVAILABLE", "ON_CONTACT", "ACW"))
        served = {q for a in sim.v2.world(inst).agents if a.routing_profile == rp for q in a.queues}
        assert v["CONTACTS_IN_QUEUE"] == sum(1 for c in waiting if c.queue in served)
    in_queue = [_values(r)["CONTACTS_IN_QUEUE"] for r in ranked["MetricResults"]]
    assert in_queue == sorted(in_queue, reverse=True) and len(set(in_queue)) > 1
    everyone = [u for us in users.values() for u in us]
    with_ended = {u["User"]["Id"] for u in everyone if any(c["AgentContactState"] == "ENDED" for c in u["Contacts"])}
    assert with_ended and {u["User"]["Id"] for u in ended["UserDataList"]} == with_ended


async def test_after_contact_work_intervals_are_what_user_data_lists_as_ended(start_sim: StartSim) -> None:
    clock = Clock(T0)
    h = await _start(start_sim, clock, agents_per_instance=30)
    sim, inst = h.sim, _inst(h.sim)
    day = sim.agent_acw_intervals(inst.id, T0 - 3600, T0)
    assert day and all(f < t for *_x, f, t in day)
    acts = sim.agent_activity_intervals(inst.id, int(T0) - 3600, int(T0))
    # an agent counted in ACW is in some contact's after-contact work
    for a, n, f, _t in acts:
        if n == "ACW":
            assert any(x[0] == a and x[4] <= f < x[5] for x in day), (a, f)
    checked = 0
    async with _client(h) as client:
        for t in (T0 - 3000.5, T0 - 1800.5, T0 - 600.5):
            clock.t = t
            pages = await _all_pages(client.get_current_user_data, InstanceId=inst.id,
                                     Filters={"RoutingProfiles": inst.routing_profiles})
            ended = {(u["User"]["Id"], c["ContactId"], c["Channel"], c["Queue"]["Id"],
                      int(c["StateStartTimestamp"].timestamp()))
                     for p in pages for u in p["UserDataList"] for c in u["Contacts"]
                     if c["AgentContactState"] == "ENDED"}
            want = {(a, cid, ch, q, f) for a, cid, ch, q, f, e in sim.agent_acw_intervals(inst.id, t, t + 1e-6)
                    if f <= t < e}
            assert ended == want, t
            checked += len(ended)
    assert checked
