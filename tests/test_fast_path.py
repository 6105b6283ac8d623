"""Differential tests: the orjson fast path against plain aiobotocore, through the simulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from unittest import mock

import pytest
from botocore.model import ServiceModel
from botocore.parsers import create_parser

from collector import errors
from collector.adapters.connect import BotocoreConnect
from collector.apis.v1.api import plan
from collector.apis.v1.decode import rows_of
from collector.apis.v1.model import MetricDataRequest
from collector.apis.v1.settings import CollectionSettings
from collector.model import Target
from collector.simulator import FleetSpec, SimulatorConfig
from tests.conftest import StartSim

FIXED = dt.datetime(2026, 11, 26, 5, 0, 0)


def _requests(sim: Any, groupings: list[str]) -> tuple[Target, list[MetricDataRequest]]:
    inst = next(iter(sim.fleet.instances.values()))
    target = Target(inst.id, inst.region, inst.account, tuple(inst.queues))
    coll = CollectionSettings(groupings=groupings, service_levels=[10, 20, 30], max_results=3)
    now = dt.datetime.now(dt.UTC)
    e = int(now.timestamp()) - 3600
    end = dt.datetime.fromtimestamp(e - e % 900, dt.UTC)
    works = plan([target], coll, end - dt.timedelta(minutes=30), end, now)
    return target, [r for w in works for r in w.requests]


async def _capture(fast: bool, target: Target, req: MetricDataRequest, token: str | None) -> tuple[Any, Any]:
    """(the request that went on the wire, the decoded page)."""
    seen: list[Any] = []

    def record(request: Any, **_kw: Any) -> None:
        seen.append(request)

    async with BotocoreConnect(fast_path=fast) as source:
        client = await source.client(target)
        client.meta.events.register_first("before-send.connect.GetMetricData", record)
        with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED), \
                mock.patch("uuid.uuid4", return_value="00000000-0000-4000-8000-000000000000"):
            page = await source.get_metric_data(target, req, token)
    (wire,) = seen
    return (wire.method, wire.url, wire.body, dict(wire.headers)), page


@pytest.mark.parametrize("groupings", [["QUEUE", "CHANNEL"], ["ROUTING_PROFILE", "AGENT_STATUS"], ["SUBTYPE", "VALIDATION_TEST_TYPE"], []])
async def test_fast_path_sends_the_same_request_and_decodes_the_same_rows(start_sim: StartSim, groupings: list[str]) -> None:
    h = await start_sim(SimulatorConfig(fleet=FleetSpec(queues_per_instance=12), throttle=False))
    target, reqs = _requests(h.sim, groupings)
    pages = 0
    all_rows: list[Any] = []
    for req in reqs:
        token: str | None = None
        while True:
            wire_fast, (rows_fast, next_fast) = await _capture(True, target, req, token)
            wire_plain, (rows_plain, next_plain) = await _capture(False, target, req, token)
            assert wire_fast == wire_plain  # method, path, body and every (signed) header
            assert b"SignedHeaders=content-type;host;x-amz-date" in wire_fast[3]["Authorization"]
            assert rows_fast == rows_plain
            all_rows += rows_plain
            assert (next_fast is None) == (next_plain is None)
            pages += 1
            if not next_fast:
                break
            token = next_fast
    assert pages > len(reqs) or not groupings  # really paged
    if groupings == ["QUEUE", "CHANNEL"]:  # enough groups that some had no contacts
        assert any(v is None for r in all_rows for v in r[1])


def test_orjson_rows_equal_rows_from_botocore_parsed_bodies(small_fleet: SimulatorConfig) -> None:
    import botocore.session
    import orjson

    from collector.simulator import Simulator

    sim = Simulator(dataclasses.replace(small_fleet, fleet=FleetSpec(queues_per_instance=40)))
    model = botocore.session.get_session().get_service_model("connect")
    assert isinstance(model, ServiceModel)
    op = model.operation_model("GetMetricData")
    parser = create_parser("rest-json")
    target, reqs = _requests(sim, ["QUEUE", "CHANNEL"])
    for req in reqs:
        api = req.to_api()
        body = {**api, "StartTime": int(req.start.timestamp()), "EndTime": int(req.end.timestamp()), "MaxResults": 100}
        body.pop("InstanceId")
        raw = sim.get_metric_data(target.instance_id, target.region, body)
        parsed = parser.parse({"status_code": 200, "headers": {}, "body": raw}, op.output_shape)
        assert rows_of(orjson.loads(raw)["MetricResults"], req.metrics) == rows_of(parsed["MetricResults"], req.metrics)


FAULTS = [
    (429, "ThrottlingException", errors.Throttled),
    (429, "TooManyRequestsException", errors.Throttled),
    (500, "InternalServiceException", errors.TransientApiError),
    (400, "InvalidParameterException", errors.ClientBug),
    (400, "InvalidRequestException", errors.ClientBug),
    (404, "ResourceNotFoundException", errors.NotFound),
    (403, "AccessDeniedException", errors.AccessDenied),
]


@pytest.mark.parametrize("status, code, cls", FAULTS)
async def test_error_bodies_map_to_the_same_classes(start_sim: StartSim, small_fleet: SimulatorConfig, status: int, code: str, cls: type) -> None:
    h = await start_sim(small_fleet)
    target, reqs = _requests(h.sim, ["QUEUE"])
    got = []
    for fast in (True, False):
        h.sim.fail_next = [(status, code, "no")]
        async with BotocoreConnect(fast_path=fast) as source:
            with pytest.raises(errors.ApiError) as e:
                await source.get_metric_data(target, reqs[0], None)
        got.append((type(e.value), e.value.code, e.value.status))
    assert got[0] == got[1] == (cls, code, status)


async def test_expired_token_maps_to_the_same_class(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    target, reqs = _requests(h.sim, ["QUEUE", "CHANNEL"])
    for fast in (True, False):
        h.sim.fail_next = [(400, "InvalidRequestException", "The NextToken has expired")]
        async with BotocoreConnect(fast_path=fast) as source:
            with pytest.raises(errors.ExpiredToken):
                await source.get_metric_data(target, reqs[0], "tok")


@pytest.mark.parametrize("body", [b'{"MetricResults": [', b"[]", b'{"MetricResults": [{"Collections": [{"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": "7"}]}]}'])
async def test_malformed_bodies_fail_the_same_way(start_sim: StartSim, small_fleet: SimulatorConfig, body: bytes) -> None:
    h = await start_sim(small_fleet)
    target, reqs = _requests(h.sim, ["QUEUE"])
    original = h.sim._respond

    async def broken(op: str, fn: Any) -> Any:
        from aiohttp import web

        return web.Response(body=body, content_type="application/json")

    h.sim._respond = broken  # type: ignore[method-assign]
    try:
        for fast in (True, False):
            async with BotocoreConnect(fast_path=fast) as source:
                with pytest.raises(errors.MalformedResponse):
                    await source.get_metric_data(target, reqs[0], None)
    finally:
        h.sim._respond = original  # type: ignore[method-assign]


def test_simulator_wire_json_equals_its_results(small_fleet: SimulatorConfig) -> None:
    import orjson

    from collector.simulator import Simulator

    sim = Simulator(dataclasses.replace(small_fleet, fleet=FleetSpec(queues_per_instance=30)))
    inst = next(iter(sim.fleet.instances.values()))
    wanted = [("CONTACTS_HANDLED", None), ("HANDLE_TIME", None), ("SERVICE_LEVEL", 20.0)]
    filters = {"Queues": list(inst.queues), "Channels": ["VOICE", "CHAT"]}
    for provisional in (False, True):
        full = sim.results(inst, 1_700_000_100, 1_700_001_000, ["QUEUE", "CHANNEL"], filters, wanted, provisional)
        frags, total = sim.page_json(inst, 1_700_000_100, 1_700_001_000, ["QUEUE", "CHANNEL"], filters,
                                     wanted, provisional, 10, 20)
        assert total == len(full)
        assert [orjson.loads(f) for f in frags] == full[10:30]
