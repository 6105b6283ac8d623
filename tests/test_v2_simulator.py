"""GetMetricDataV2 through the real aiobotocore client against the simulator: the
msgspec fast path against botocore's parser, the simulator's strictness and the
consistency of its agent-grain data, and the agent/routing-profile/hierarchy listings."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any
from unittest import mock

import botocore.session
import orjson
import pytest
from botocore.parsers import create_parser

from collector import errors
from collector.adapters.connect import BotocoreConnect
from collector.apis.v2 import decode as decode_v2
from collector.apis.v2.api import plan
from collector.apis.v2.model import PageV2, V2Request
from collector.apis.v2.planner import newest_end
from collector.apis.v2.settings import V2ProfileSettings
from collector.model import Target
from collector.simulator import FleetSpec, Simulator, SimulatorConfig
from tests.conftest import StartSim

FIXED = dt.datetime(2026, 11, 26, 5, 0, 0)
CONFIG = SimulatorConfig(fleet=FleetSpec(queues_per_instance=6, agents_per_instance=8), throttle=False)


def _target(sim: Simulator) -> Target:
    inst = next(iter(sim.fleet.instances.values()))
    return Target(inst.id, inst.region, inst.account, ())


def _profile(**kw: Any) -> V2ProfileSettings:
    base: dict[str, Any] = {
        "name": "p", "api": "v2", "interval": "15m", "groupings": ["AGENT", "QUEUE"],
        "filters": {"queues": "all"},
        "metrics": ["CONTACTS_HANDLED", "AVG_HANDLE_TIME", "AGENT_ANSWER_RATE",
                    {"name": "CONTACTS_HANDLED", "metric_filters": [{"key": "INITIATION_METHOD", "values": ["INBOUND"]}]}],
        "max_results": 7,
    }
    return V2ProfileSettings(**{**base, **kw})


def _requests(sim: Simulator, profile: V2ProfileSettings, hours: int = 2) -> list[V2Request]:
    target = _target(sim)
    inst = sim.fleet.instances[target.instance_id]
    now = dt.datetime.now(dt.UTC)
    end = newest_end(now, profile.interval_period, profile.time_zone)
    start = end - dt.timedelta(hours=hours)
    if profile.interval_period in ("DAY", "WEEK"):
        start = end - dt.timedelta(days=hours)
    found = {target.instance_id: {"QUEUE": sorted(inst.queues)}}
    return [r for w in plan([target], profile, start, end, now, found) for r in w.requests]


async def _pages(source: BotocoreConnect, target: Target, req: V2Request) -> list[PageV2]:
    out, token = [], None
    while True:
        page = await source.get_metric_data_v2(target, req, token)
        out.append(page)
        if not page.next_token:
            return out
        token = page.next_token


async def _capture(fast: bool, target: Target, req: V2Request, token: str | None) -> tuple[Any, PageV2]:
    seen: list[Any] = []

    def record(request: Any, **_kw: Any) -> None:
        seen.append(request)

    async with BotocoreConnect(fast_path=fast) as source:
        client = await source.client(target)
        client.meta.events.register_first("before-send.connect.GetMetricDataV2", record)
        with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED), \
                mock.patch("uuid.uuid4", return_value="00000000-0000-4000-8000-000000000000"):
            page = await source.get_metric_data_v2(target, req, token)
    (wire,) = seen
    return (wire.method, wire.url, wire.body, dict(wire.headers)), page


@pytest.mark.parametrize("groupings", [["AGENT", "QUEUE"], ["ROUTING_PROFILE", "CHANNEL"],
                                       ["AGENT_HIERARCHY_LEVEL_ONE", "AGENT_HIERARCHY_LEVEL_THREE"], []])
async def test_fast_path_sends_the_same_request_and_decodes_the_same_rows(start_sim: StartSim, groupings: list[str]) -> None:
    h = await start_sim(CONFIG)
    target = _target(h.sim)
    (req,) = _requests(h.sim, _profile(groupings=groupings))
    token: str | None = None
    pages = 0
    rows: list[Any] = []
    while True:
        wire_fast, fast = await _capture(True, target, req, token)
        wire_plain, plain = await _capture(False, target, req, token)
        assert wire_fast == wire_plain
        assert fast.rows == plain.rows and fast.metrics == plain.metrics
        assert (fast.next_token is None) == (plain.next_token is None)
        rows += plain.rows
        pages += 1
        if not fast.next_token:
            break
        token = fast.next_token
    assert rows
    assert pages > 1 or not groupings
    if groupings == ["AGENT", "QUEUE"]:
        assert any(v is None for _s, _e, (_d, vals) in rows for v in vals)  # ratios without denominator
        assert all({"AGENT", "QUEUE", "AGENT_ARN", "QUEUE_ARN"} == {k for k, _v in d} for _s, _e, (d, _v) in rows)


def test_msgspec_rows_equal_rows_from_botocore_parsed_bodies() -> None:
    sim = Simulator(CONFIG)
    model = botocore.session.get_session().get_service_model("connect")
    op = model.operation_model("GetMetricDataV2")
    parser = create_parser("rest-json")
    for groupings in (["AGENT", "QUEUE"], ["QUEUE", "CHANNEL"], []):
        (req,) = _requests(sim, _profile(groupings=groupings, max_results=100))
        index = decode_v2.MetricIndex(req.metrics)
        api = req.to_api()
        body = {**api, "StartTime": int(req.start.timestamp()), "EndTime": int(req.end.timestamp())}
        inst = sim.fleet.instances[_target(sim).instance_id]
        raw = sim.v2.page(inst, body, sim.now(), sim._read_token, sim._make_token)
        parsed = parser.parse({"status_code": 200, "headers": {}, "body": raw}, op.output_shape)
        fast = decode_v2.decode_page(raw, req.metrics, index)
        assert fast.rows == decode_v2.rows_of(parsed["MetricResults"], index)
        assert fast.rows == decode_v2.rows_of(orjson.loads(raw)["MetricResults"], index)
    with pytest.raises(errors.MalformedResponse):
        decode_v2.decode_page(b'{"MetricResults":[{"Collections":[]}]}', req.metrics, index)  # no MetricInterval
    with pytest.raises(errors.MalformedResponse):
        decode_v2.decode_page(b'{"MetricResults":[', req.metrics, index)
    with pytest.raises(errors.MalformedResponse, match="2500"):
        decode_v2.decode_page(b'{"MetricResults":[],"NextToken":"' + b"x" * 2501 + b'"}', req.metrics, index)


async def test_additive_metrics_sum_across_groupings_and_intervals(start_sim: StartSim) -> None:
    h = await start_sim(CONFIG)
    target = _target(h.sim)
    metrics = ["CONTACTS_HANDLED", "SUM_HANDLE_TIME"]
    by_agent_queue = _requests(h.sim, _profile(groupings=["AGENT", "QUEUE"], metrics=metrics, max_results=100), 4)
    by_queue = _requests(h.sim, _profile(groupings=["QUEUE"], metrics=metrics, max_results=100), 4)
    by_queue_hour = _requests(h.sim, _profile(interval="1h", groupings=["QUEUE"], metrics=metrics), 4)
    async with BotocoreConnect() as source:
        fine = [r for req in by_agent_queue for p in await _pages(source, target, req) for r in p.rows]
        queue = [r for req in by_queue for p in await _pages(source, target, req) for r in p.rows]
        hourly = [r for req in by_queue_hour for p in await _pages(source, target, req) for r in p.rows]
    sums: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for s, _e, (d, vals) in fine:
        acc = sums[(s, dict(d)["QUEUE"])]
        acc[0] += vals[0] or 0
        acc[1] += vals[1] or 0
    got = {(s, dict(d)["QUEUE"]): vals for s, _e, (d, vals) in queue}
    assert got == {k: v for k, v in sums.items()}
    assert len(got) > 20
    per_hour: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (s, q), vals in got.items():
        acc = per_hour[(s - s % 3600, q)]
        acc[0] += vals[0] or 0
        acc[1] += vals[1] or 0
    lo, hi = int(by_queue[0].start.timestamp()), int(by_queue[-1].end.timestamp())
    hours = {(s, dict(d)["QUEUE"]): vals for s, e, (d, vals) in hourly if lo <= s and e <= hi}
    assert hours and hours == {k: v for k, v in per_hour.items() if lo <= k[0] and k[0] + 3600 <= hi}


def _body(sim: Simulator, **change: Any) -> dict[str, Any]:
    inst = next(iter(sim.fleet.instances.values()))
    now = int(sim.now())
    end = now - now % 900 - 3600
    body: dict[str, Any] = {
        "ResourceArn": inst.arn, "StartTime": end - 3600, "EndTime": end,
        "Interval": {"TimeZone": "UTC", "IntervalPeriod": "FIFTEEN_MIN"},
        "Filters": [{"FilterKey": "QUEUE", "FilterValues": sorted(inst.queues)[:2]}],
        "Groupings": ["QUEUE"], "Metrics": [{"Name": "CONTACTS_HANDLED"}], "MaxResults": 100,
    }
    body.update(change)
    return body


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"StartTime": "SHIFT-3D"}, "InvalidParameterException", "less than 3 days"),
        ({"StartTime": "SHIFT-91D"}, "InvalidParameterException", "3 months"),
        ({"EndTime": "FUTURE"}, "InvalidParameterException", "later than the current time"),
        ({"Filters": [{"FilterKey": "CHANNEL", "FilterValues": ["VOICE"]}]}, "InvalidRequestException", "At least one of QUEUE"),
        ({"Filters": [{"FilterKey": k, "FilterValues": ["x"]} for k in
                      ["QUEUE", "AGENT", "ROUTING_PROFILE", "CHANNEL", "AGENT_HIERARCHY_LEVEL_ONE", "AGENT_HIERARCHY_LEVEL_TWO"]]},
         "InvalidParameterException", "between 1 and 5"),
        ({"Filters": [{"FilterKey": "QUEUE", "FilterValues": [f"q{i}" for i in range(60)]},
                      {"FilterKey": "AGENT", "FilterValues": [f"a{i}" for i in range(41)]}]},
         "InvalidParameterException", "up to 100 filter values"),
        ({"Groupings": ["QUEUE", "AGENT", "CHANNEL", "ROUTING_PROFILE", "AGENT_HIERARCHY_LEVEL_ONE"]},
         "InvalidParameterException", "at most 4"),
        ({"Metrics": [{"Name": "SERVICE_LEVEL"}]}, "InvalidParameterException", "requires a Threshold"),
        ({"Metrics": [{"Name": "SERVICE_LEVEL", "Threshold": [{"Comparison": "LT", "ThresholdValue": 20},
                                                              {"Comparison": "LT", "ThresholdValue": 30}]}]},
         "InvalidParameterException", "at most 1 item"),
        ({"Metrics": [{"Name": "CONTACTS_HANDLED", "MetricFilters": [
            {"MetricFilterKey": "INITIATION_METHOD", "MetricFilterValues": [str(i) for i in range(11)]}]}]},
         "InvalidParameterException", "between 1 and 10"),
        ({"Metrics": [{"Name": "CONTACTS_HANDLED", "MetricFilters": [
            {"MetricFilterKey": "INITIATION_METHOD", "MetricFilterValues": ["A"]}] * 3}]},
         "InvalidParameterException", "at most 2"),
        ({"Groupings": ["AGENT"], "Metrics": [{"Name": "SERVICE_LEVEL", "Threshold": [{"Comparison": "LT", "ThresholdValue": 20}]}]},
         "InvalidParameterException", "does not support grouping AGENT"),
        ({"Metrics": [{"Name": "SERVICE_LEVEL", "Threshold": [{"Comparison": "LT", "ThresholdValue": t}]} for t in range(1, 22)]},
         "InvalidParameterException", "up to 20 SERVICE_LEVEL"),
        ({"MaxResults": 101}, "InvalidParameterException", "MaxResults"),
        ({"NextToken": "x" * 2501}, "InvalidParameterException", "2500"),
        ({"ResourceArn": "arn:aws:connect:us-east-1:100000000000:instance/nope"}, "ResourceNotFoundException", "not found"),
    ],
)
async def test_each_limit_gets_the_real_error(start_sim: StartSim, change: dict[str, Any], code: str, message: str) -> None:
    h = await start_sim(CONFIG)
    body = _body(h.sim, **change)
    if body["StartTime"] == "SHIFT-3D":
        body["StartTime"] = body["EndTime"] - 3 * 86400
    if body["StartTime"] == "SHIFT-91D":
        body["StartTime"], body["EndTime"] = body["EndTime"] - 91 * 86400, body["EndTime"] - 91 * 86400 + 900
    if body["EndTime"] == "FUTURE":
        body["EndTime"] = body["StartTime"] + 86400 * 2
        body["StartTime"] = int(h.sim.now()) - 3600
    target = _target(h.sim)
    async with BotocoreConnect() as source:
        # the unchanged request is served
        await source._invoke(target, "get_metric_data_v2", _body(h.sim))
        with pytest.raises(errors.ApiError) as e:
            await source._invoke(target, "get_metric_data_v2", body)
    assert e.value.code == code and message in str(e.value), str(e.value)
    assert isinstance(e.value, errors.NotFound if code == "ResourceNotFoundException" else errors.ClientBug)


async def test_listings_page_through_the_real_client(start_sim: StartSim) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=30, agents_per_instance=40), throttle=False))
    target = _target(h.sim)
    inst = h.sim.fleet.instances[target.instance_id]
    async with BotocoreConnect() as source:
        client = await source.client(target)
        for op, key, n in (("list_users", "UserSummaryList", 40),
                           ("list_routing_profiles", "RoutingProfileSummaryList", len(inst.routing_profiles)),
                           ("list_user_hierarchy_groups", "UserHierarchyGroupSummaryList", 20)):
            got, token, pages = [], None, 0
            while True:
                kw: dict[str, Any] = {"InstanceId": target.instance_id, "MaxResults": 7}
                if token:
                    kw["NextToken"] = token
                out = await getattr(client, op)(**kw)
                got += out[key]
                pages += 1
                token = out.get("NextToken")
                if not token:
                    break
            assert len(got) == n and len({x["Id"] for x in got}) == n and pages == -(-n // 7)
        got, token, pages = [], None, 0
        while True:
            kw = {"InstanceId": target.instance_id, "MaxResults": 9}
            if token:
                kw["NextToken"] = token
            out = await client.search_users(**kw)
            got += out["Users"]
            pages += 1
            token = out.get("NextToken")
            if not token:
                break
        assert pages == 5 and len({u["Id"] for u in got}) == 40
        found, token = await source.search_users(target, None)
        assert token is None and len(found) == 40
        a = found[3]
        assert a.first_name and a.last_name and a.routing_profile_id in inst.routing_profiles and a.hierarchy_group_id
        users, token = await source.list_users(target, None)
        assert token is None and len(users) == 40 and users[0].username == "agent000"
        rps, _ = await source.list_routing_profiles(target, None)
        assert {r.id for r in rps} == set(inst.routing_profiles)
        groups, _ = await source.list_user_hierarchy_groups(target, None)
        assert len(groups) == 20 and all(g.name.startswith("level") for g in groups)
