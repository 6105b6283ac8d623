"""collector.retry: classification, full-jitter backoff, counting, limiter feedback."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from types import TracebackType

import pytest
from prometheus_client import REGISTRY

from collector import errors
from collector.clock import ManualClock
from collector.observability import DB_METER
from collector.retry import Counters, RetryPolicy, classify, retry

POLICY = RetryPolicy(max_attempts=4, base=0.5, cap=2.0)


class Pacer:
    def __init__(self) -> None:
        self.entered = self.throttles = self.successes = 0

    async def __aenter__(self) -> Pacer:
        self.entered += 1
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def throttled(self) -> None:
        self.throttles += 1

    def succeeded(self) -> None:
        self.successes += 1


class Script:
    """Fails with each of ``failures`` in turn, then returns ``"ok"``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    "exc, kind",
    [
        (errors.Throttled("x"), "throttled"),
        (errors.TransientApiError("x"), "transient"),
        (errors.StorageError("x"), "transient"),
        (errors.MigrationError("x"), "fatal"),
        (errors.ClientBug("x"), "fatal"),
        (errors.AccessDenied("x"), "fatal"),
        (errors.NotFound("x"), "fatal"),
        (errors.ExpiredToken("x"), "fatal"),
        (errors.MalformedResponse("x"), "fatal"),
        (errors.LeaseLost("x"), "fatal"),
        (errors.PlanError("x"), "fatal"),
    ],
)
def test_each_failure_is_classified_once(exc: Exception, kind: str) -> None:
    assert classify(exc) == kind


async def test_throttles_and_transients_are_retried_with_full_jitter_and_counted() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    pacer, counters = Pacer(), Counters()
    call = Script(errors.Throttled("429"), errors.TransientApiError("503"), errors.Throttled("429"))
    before_ok = _sample("collector_api_requests_total", operation="UnitOp", outcome="ok")
    before_thr = _sample("collector_api_throttles_total", account="a", region="r", operation="UnitOp")
    got = await retry(call, operation="UnitOp", policy=POLICY, clock=clock, rng=random.Random(1),
                      limiter=pacer, shard=("a", "r"), counters=counters)
    assert got == "ok" and call.calls == 4
    assert (counters.requests, counters.retries, counters.throttles) == (4, 3, 2)
    assert (pacer.entered, pacer.throttles, pacer.successes) == (4, 2, 1)
    assert len(clock.slept) == 3
    for attempt, delay in enumerate(clock.slept, start=1):
        assert 0.0 <= delay <= min(POLICY.cap, POLICY.base * 2 ** (attempt - 1))
    assert _sample("collector_api_requests_total", operation="UnitOp", outcome="ok") == before_ok + 1
    assert _sample("collector_api_throttles_total", account="a", region="r", operation="UnitOp") == before_thr + 2
    assert _sample("collector_api_retries_total", operation="UnitOp", reason="transient") >= 1


async def test_a_fatal_error_is_raised_at_once_without_sleeping() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    call = Script(errors.ClientBug("400"))
    with pytest.raises(errors.ClientBug):
        await retry(call, operation="UnitFatal", policy=POLICY, clock=clock, rng=random.Random(1))
    assert call.calls == 1 and clock.slept == []
    assert _sample("collector_api_requests_total", operation="UnitFatal", outcome="error") >= 1


async def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    call = Script(*[errors.TransientApiError(f"503 #{i}") for i in range(10)])
    with pytest.raises(errors.TransientApiError, match="503 #3"):
        await retry(call, operation="UnitOut", policy=POLICY, clock=clock, rng=random.Random(1))
    assert call.calls == POLICY.max_attempts and len(clock.slept) == POLICY.max_attempts - 1


async def test_before_runs_ahead_of_every_attempt_and_can_refuse() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    seen: list[int] = []
    call = Script(errors.Throttled("429"))

    def before() -> None:
        seen.append(call.calls)
        if len(seen) == 2:
            raise errors.PlanError("the range slid out of the lookback")

    with pytest.raises(errors.PlanError):
        await retry(call, operation="UnitBefore", policy=POLICY, clock=clock, rng=random.Random(1), before=before)
    assert seen == [0, 1] and call.calls == 1


async def test_storage_retries_are_counted_on_the_database_meter() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    call = Script(errors.StorageError("connection reset"))
    before = _sample("collector_db_retries_total", operation="unit_write", reason="transient")
    assert await retry(call, operation="unit_write", policy=POLICY, clock=clock, rng=random.Random(1),
                       meter=DB_METER, min_delay=0.2) == "ok"
    assert _sample("collector_db_retries_total", operation="unit_write", reason="transient") == before + 1
    assert _sample("collector_api_retries_total", operation="unit_write", reason="transient") == 0.0
    assert clock.slept[0] >= 0.2


async def test_the_outlast_policy_never_gives_up_on_the_database_and_its_backoff_stays_capped() -> None:
    from collector.retry import OUTLAST

    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    call = Script(*[errors.StorageError(f"down #{i}") for i in range(3000)])
    assert await retry(call, operation="UnitOutlast", policy=OUTLAST, clock=clock, rng=random.Random(1),
                       meter=DB_METER) == "ok"
    assert call.calls == 3001 and max(clock.slept) <= OUTLAST.cap
    with pytest.raises(errors.MigrationError):  # what no waiting can fix is still raised at once
        await retry(Script(errors.MigrationError("newer schema")), operation="UnitOutlast", policy=OUTLAST,
                    clock=clock, rng=random.Random(1), meter=DB_METER)
