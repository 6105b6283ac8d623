"""Every API limit: the collector never sends a request that breaks it, and the
simulator refuses such a request the way the real API does."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from collector.adapters.connect import BotocoreConnect
from collector.apis.v1 import catalog
from collector.apis.v1.api import plan
from collector.apis.v1.model import MetricDataRequest, MetricRequest
from collector.apis.v1.planner import check_request, metric_chunks, slices
from collector.apis.v1.settings import CollectionSettings
from collector.apis.v1.unit import SliceWork
from collector.clock import SystemClock
from collector.errors import PlanError
from collector.fetch import FetchContext, SliceFailure, fetch_unit
from collector.model import SliceKey, Target
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy
from collector.simulator import SimulatorConfig
from tests.conftest import StartSim


def _now() -> datetime:
    return datetime.now(UTC)


def _aligned_end() -> datetime:
    n = _now() - timedelta(minutes=30)
    e = int(n.timestamp())
    return datetime.fromtimestamp(e - e % 900, UTC)


def valid_request(instance_id: str, queues: list[str]) -> MetricDataRequest:
    end = _aligned_end()
    return MetricDataRequest(
        instance_id=instance_id,
        start=end - timedelta(minutes=15),
        end=end,
        filters={"Queues": tuple(queues), "Channels": ("VOICE", "CHAT")},
        groupings=("QUEUE", "CHANNEL"),
        metrics=metric_chunks(sorted(catalog.METRICS), [20, 60])[0],
    )


SL = catalog.METRICS["SERVICE_LEVEL"]


def _sl(t: float) -> MetricRequest:
    return MetricRequest("SERVICE_LEVEL", SL.unit, SL.statistic, t)


Mutation = Callable[[MetricDataRequest], MetricDataRequest]
R = dataclasses.replace

CASES: list[tuple[str, Mutation]] = [
    ("start not on 5 minutes", lambda r: R(r, start=r.start + timedelta(minutes=1))),
    ("end not on 5 minutes", lambda r: R(r, end=r.end - timedelta(seconds=30))),
    ("end before start", lambda r: R(r, start=r.end, end=r.start)),
    ("range of 24 hours", lambda r: R(r, start=r.end - timedelta(hours=24) + timedelta(minutes=30), end=r.end + timedelta(minutes=30))),
    ("start older than 24 hours", lambda r: R(r, start=r.end - timedelta(hours=25), end=r.end - timedelta(hours=24, minutes=45))),
    ("101 queues", lambda r: R(r, filters={**r.filters, "Queues": tuple(f"q{i}" for i in range(101))})),
    ("3 groupings", lambda r: R(r, groupings=("QUEUE", "CHANNEL", "SUBTYPE"))),
    ("routing step grouping", lambda r: R(r, groupings=("ROUTING_STEP_EXPRESSION",))),
    ("routing step filter", lambda r: R(r, filters={**r.filters, "RoutingStepExpressions": ("x",)})),
    ("EMAIL channel", lambda r: R(r, filters={**r.filters, "Channels": ("EMAIL",)})),
    ("101 routing profiles", lambda r: R(r, filters={**r.filters, "RoutingProfiles": tuple(f"r{i}" for i in range(101))})),
    ("51 agent statuses", lambda r: R(r, filters={**r.filters, "AgentStatuses": tuple(f"a{i}" for i in range(51))})),
    ("11 subtypes", lambda r: R(r, filters={**r.filters, "Subtypes": tuple(f"s{i}" for i in range(11))})),
    ("11 validation test types", lambda r: R(r, filters={**r.filters, "ValidationTestTypes": tuple(f"v{i}" for i in range(11))})),
    ("wrong unit", lambda r: R(r, metrics=(MetricRequest("HANDLE_TIME", "COUNT", "AVG"),))),
    ("wrong statistic", lambda r: R(r, metrics=(MetricRequest("QUEUED_TIME", "SECONDS", "AVG"),))),
    ("threshold 0", lambda r: R(r, metrics=(_sl(0),))),
    ("threshold 604801", lambda r: R(r, metrics=(_sl(604_801),))),
    ("threshold not whole", lambda r: R(r, metrics=(_sl(20.5),))),
    ("service level without threshold", lambda r: R(r, metrics=(MetricRequest("SERVICE_LEVEL", SL.unit, SL.statistic, None),))),
    ("21 service levels", lambda r: R(r, metrics=tuple(_sl(t) for t in range(1, 22)))),
    ("threshold on a count", lambda r: R(r, metrics=(MetricRequest("CONTACTS_HANDLED", "COUNT", "SUM", 20),))),
    ("MaxResults 101", lambda r: R(r, max_results=101)),
    ("metric twice", lambda r: R(r, metrics=(r.metrics[0], r.metrics[0]))),
]


@pytest.mark.parametrize("name, mutate", CASES, ids=[c[0] for c in CASES])
def test_planner_check_refuses(name: str, mutate: Mutation) -> None:
    good = valid_request("i", ["q1"])
    check_request(good, _now())
    with pytest.raises(PlanError):
        check_request(mutate(good), _now())


@pytest.mark.parametrize("name, mutate", CASES, ids=[c[0] for c in CASES])
async def test_broken_request_is_never_sent(start_sim: StartSim, small_fleet: SimulatorConfig, name: str, mutate: Mutation) -> None:
    h = await start_sim(small_fleet)
    inst = next(iter(h.sim.fleet.instances.values()))
    req = mutate(valid_request(inst.id, list(inst.queues)))
    target = Target(inst.id, inst.region, inst.account, tuple(inst.queues))
    work = SliceWork(SliceKey("default", inst.id, req.start, req.end), target, (req,))
    async with BotocoreConnect() as source:
        with pytest.raises(SliceFailure):
            await fetch_unit(work, FetchContext(source, Limiters(), RetryPolicy(), SystemClock(), random.Random(1),
                                                Counters()))
    assert sum(h.sim.stats.by_status.values()) == 0  # nothing reached the API


@pytest.mark.parametrize("name, mutate", CASES, ids=[c[0] for c in CASES])
async def test_simulator_refuses_like_the_api(start_sim: StartSim, small_fleet: SimulatorConfig, name: str, mutate: Mutation) -> None:
    h = await start_sim(small_fleet)
    inst = next(iter(h.sim.fleet.instances.values()))
    good = valid_request(inst.id, list(inst.queues))
    async with AioSession().create_client("connect", region_name=inst.region) as client:
        ok = await client.get_metric_data(**good.to_api())
        assert ok["MetricResults"]
        with pytest.raises(ClientError) as e:
            await client.get_metric_data(**mutate(good).to_api())
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] in ("InvalidParameterException", "InvalidRequestException", "SerializationException")


async def test_simulator_pages_and_binds_next_token_to_parameters(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    clock = {"offset": 0.0}
    import time

    h = await start_sim(small_fleet, now=lambda: time.time() + clock["offset"])
    inst = next(iter(h.sim.fleet.instances.values()))
    req = R(valid_request(inst.id, list(inst.queues)), max_results=2)
    async with AioSession().create_client("connect", region_name=inst.region) as client:
        first = await client.get_metric_data(**req.to_api())
        token = first["NextToken"]
        assert len(first["MetricResults"]) == 2
        second = await client.get_metric_data(**req.to_api(token))
        assert second["MetricResults"] != first["MetricResults"]
        other = R(req, groupings=("QUEUE",))
        with pytest.raises(ClientError, match="different request parameters"):
            await client.get_metric_data(**other.to_api(token))
        with pytest.raises(ClientError) as e:
            await client.get_metric_data(**R(req, instance_id="no-such-instance").to_api())
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        clock["offset"] = 301.0
        with pytest.raises(ClientError, match="expired") as e:
            await client.get_metric_data(**req.to_api(token))
        assert e.value.response["Error"]["Code"] == "InvalidRequestException"


async def test_simulator_errors_use_real_codes(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(dataclasses.replace(small_fleet, throttle=True, burst=1, rate=0.001))
    inst = next(iter(h.sim.fleet.instances.values()))
    good = valid_request(inst.id, list(inst.queues))
    async with AioSession().create_client(
        "connect", region_name=inst.region,
        config=__import__("aiobotocore.config").config.AioConfig(retries={"total_max_attempts": 1}),
    ) as client:
        await client.get_metric_data(**good.to_api())
        with pytest.raises(ClientError) as e:
            await client.get_metric_data(**good.to_api())
        assert e.value.response["Error"]["Code"] == "ThrottlingException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_planner_splits_queues_and_service_levels() -> None:
    coll = CollectionSettings(service_levels=list(range(1, 46)))
    end = _aligned_end()
    target = Target("i", "us-east-1", "a", tuple(f"q{i}" for i in range(250)))
    works = plan([target], coll, end - timedelta(hours=2), end, _now())
    assert len(works) == 8
    for w in works:
        assert len(w.requests) == 3 * 3  # 3 queue batches x 3 metric chunks (24+20, 20, 5)
        for r in w.requests:
            assert len(r.filters["Queues"]) <= 100
            assert sum(m.name == "SERVICE_LEVEL" for m in r.metrics) <= 20
        queues = {q for r in w.requests for q in r.filters["Queues"]}
        assert queues == set(target.queues)
        metrics = {(m.name, m.threshold) for r in w.requests if r.filters["Queues"][0] == "q0" for m in r.metrics}
        assert len(metrics) == 24 + 45


def test_slices_tile_the_range_exactly() -> None:
    end = _aligned_end()
    s = slices(end - timedelta(hours=3), end, 900, _now())
    assert s[0][0] == end - timedelta(hours=3) and s[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(s))
    assert all((e - b) == timedelta(minutes=15) for b, e in s)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda s, e: (s + timedelta(minutes=5), e), "not on a 15-minute slice boundary"),
        (lambda s, e: (s, s), "is not after start"),
        (lambda s, e: (s, e + timedelta(hours=2)), "in the future"),
        (lambda s, e: (s - timedelta(hours=24), e), "more than 24 hours ago"),
    ],
)
def test_plan_refuses_ranges_the_api_cannot_serve(change: Any, needle: str) -> None:
    end = _aligned_end()
    start, end = change(end - timedelta(hours=1), end)
    with pytest.raises(PlanError, match=needle):
        slices(start, end, 900, _now())


def test_plan_refuses_summary_over_more_than_100_queues() -> None:
    end = _aligned_end()
    coll = CollectionSettings(groupings=["CHANNEL"])
    target = Target("i", "us-east-1", "a", tuple(f"q{i}" for i in range(101)))
    with pytest.raises(PlanError, match="do not include QUEUE"):
        plan([target], coll, end - timedelta(hours=1), end, _now())
