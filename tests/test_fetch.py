"""Retry behaviour through the real botocore client against the simulator, with time injected."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.adapters.connect import BotocoreConnect
from collector.apis.v1.api import plan
from collector.apis.v1.decode import rows_of
from collector.apis.v1.planner import metric_chunks
from collector.apis.v1.settings import CollectionSettings
from collector.apis.v1.unit import SliceWork
from collector.clock import ManualClock
from collector.errors import MalformedResponse
from collector.fetch import FetchContext, SliceFailure, fetch_unit
from collector.model import Target
from collector.ports import CompletedSlice
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy
from collector.simulator import Simulator, SimulatorConfig
from tests.conftest import StartSim


def _work(sim: Simulator, clock: ManualClock, max_results: int = 100) -> SliceWork:
    inst = next(iter(sim.fleet.instances.values()))
    target = Target(inst.id, inst.region, inst.account, tuple(inst.queues))
    coll = CollectionSettings(max_results=max_results)
    end = clock.now().replace(second=0, microsecond=0)
    end -= timedelta(minutes=end.minute % 15 + 30)
    return plan([target], coll, end - timedelta(minutes=15), end, clock.now())[0]


POLICY = RetryPolicy(max_attempts=5, base=0.5, cap=4.0)


async def _collect(sim_work: SliceWork, clock: ManualClock,
                   policy: RetryPolicy = POLICY) -> tuple[CompletedSlice, Counters]:
    counters = Counters()
    async with BotocoreConnect() as source:
        (done,) = await fetch_unit(sim_work, FetchContext(source, Limiters(), policy, clock, random.Random(3), counters))
    return done, counters


@pytest.mark.parametrize("status, code", [(429, "ThrottlingException"), (429, "TooManyRequestsException"), (500, "InternalServiceException"), (503, "ServiceUnavailableException")])
async def test_retryable_errors_back_off_with_full_jitter_and_no_stacked_retries(
    start_sim: StartSim, small_fleet: SimulatorConfig, status: int, code: str
) -> None:
    h = await start_sim(small_fleet)
    clock = ManualClock(datetime.now(UTC))
    h.sim.fail_next = [(status, code, "try later")] * 3
    work = _work(h.sim, clock)
    done, counters = await _collect(work, clock)
    assert done.rows > 0
    assert sum(h.sim.stats.by_status.values()) == 4  # 3 failures + 1 success: botocore did not retry
    assert counters.retries == 3 and counters.requests == 4
    assert counters.throttles == (3 if status == 429 else 0)
    assert len(clock.slept) == 3
    for attempt, delay in enumerate(clock.slept, start=1):
        assert 0 <= delay <= min(4.0, 0.5 * 2 ** (attempt - 1))


async def test_retries_are_bounded(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    clock = ManualClock(datetime.now(UTC))
    h.sim.fail_next = [(500, "InternalServiceException", "down")] * 10
    with pytest.raises(SliceFailure, match="gave up after 5 attempts"):
        await _collect(_work(h.sim, clock), clock)
    assert sum(h.sim.stats.by_status.values()) == 5


async def test_a_400_is_not_retried_and_fails_the_slice_loudly(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    h = await start_sim(small_fleet)
    clock = ManualClock(datetime.now(UTC))
    h.sim.fail_next = [(400, "InvalidParameterException", "bad thing")]
    with pytest.raises(SliceFailure, match=r"InvalidParameterException.*bad thing"):
        await _collect(_work(h.sim, clock), clock)
    assert sum(h.sim.stats.by_status.values()) == 1
    assert clock.slept == []


async def test_expired_next_token_restarts_paging_cleanly(start_sim: StartSim, small_fleet: SimulatorConfig) -> None:
    offset = {"s": 0.0}
    h = await start_sim(small_fleet, now=lambda: time.time() + offset["s"])
    clock = ManualClock(datetime.now(UTC))
    work = _work(h.sim, clock, max_results=5)
    original = h.sim.get_metric_data
    calls = {"n": 0}

    def stall_once(instance_id: str, region: str, body: Any) -> bytes:  # the writer stalls once between pages 1 and 2
        calls["n"] += 1
        if calls["n"] == 2:
            offset["s"] += 400
        return original(instance_id, region, body)

    h.sim.get_metric_data = stall_once  # type: ignore[method-assign]
    done, _counters = await _collect(work, clock)
    h.sim.get_metric_data = original  # type: ignore[method-assign]
    offset["s"] = 0
    reference, _ = await _collect(work, clock)
    assert h.sim.stats.by_code["InvalidRequestException"] == 1
    flat = sorted(r for _m, rows in done.pages for r in rows)
    assert flat == sorted(r for _m, rows in reference.pages for r in rows)
    assert len(flat) > 5  # it really paged


def test_malformed_results_are_refused() -> None:
    ms = metric_chunks(["CONTACTS_HANDLED", "HANDLE_TIME"], [])[0]
    good = [{"Dimensions": {"Queue": {"Id": "q", "Arn": "arn:q"}, "Channel": "VOICE"},
             "Collections": [{"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": 3},
                             {"Metric": {"Name": "HANDLE_TIME"}}]}]
    assert rows_of(good, ms) == [(("q", "VOICE", None, None, None, None, None), [3.0, None])]
    bad_cases = [
        [{"Collections": [{"Metric": {"Name": "NOT_A_METRIC"}, "Value": 1}]}],
        [{"Collections": [{"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": "12"}]}],
        [{"Collections": [{"Value": 1}]}],
        [{"Dimensions": {"Queue": 5}, "Collections": []}],
        "not a list",
    ]
    for bad in bad_cases:
        with pytest.raises(MalformedResponse):
            rows_of(bad, ms)  # type: ignore[arg-type]
