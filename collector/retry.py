"""The one retry path: classify a failure once, back off with full jitter, count it.

Every call that can fail transiently goes through :func:`retry`: GetMetricData,
ListQueues and ListInstances (paced by their account's limiter), the writer and the
Postgres adapter's bookkeeping writes, and under ``collector serve`` every database
step of the service's loops (:data:`OUTLAST`). Throttling and transient failures are
retried up to ``policy.max_attempts``; anything else is fatal and raised at once. When
the attempts run out the last error is raised as it was.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, TypeVar

import anyio
import structlog

from collector import errors
from collector.observability import API_METER, Meter
from collector.ports import Clock

log = structlog.get_logger("collector.retry")

T = TypeVar("T")
Kind = Literal["throttled", "transient", "fatal"]


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff, bounded attempts (``max_attempts=None``: no bound,
    the call is retried until it succeeds, fails fatally or is cancelled)."""

    max_attempts: int | None = 8
    base: float = 0.1
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return rng.uniform(0.0, min(self.cap, self.base * (2 ** min(attempt - 1, 32))))

    def exhausted(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts


# The service's database work: any outage is waited out (capped backoff, never given up
# while the service runs); shutdown's cancellation is what ends the waiting.
OUTLAST = RetryPolicy(max_attempts=None, base=0.25, cap=5.0)


class Pacer(Protocol):
    """What :func:`retry` needs of a rate limiter (:class:`collector.ratelimit.AdaptiveLimiter`)."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def throttled(self) -> None: ...

    def succeeded(self) -> None: ...


@dataclass(slots=True)
class Counters:
    """Per-run tallies of what :func:`retry` did (a run's requests/retries/throttles)."""

    requests: int = 0
    retries: int = 0
    throttles: int = 0


def classify(exc: BaseException) -> Kind:
    """Throttled and transient failures are worth another attempt; the rest are not."""
    if isinstance(exc, errors.Throttled):
        return "throttled"
    if isinstance(exc, errors.TransientApiError):
        return "transient"
    if isinstance(exc, errors.StorageError) and not isinstance(exc, errors.MigrationError):
        return "transient"
    return "fatal"


def _outcome(exc: BaseException) -> str:
    kind = classify(exc)
    if kind != "fatal":
        return kind
    return "token_expired" if isinstance(exc, errors.ExpiredToken) else "error"


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    operation: str,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    limiter: Pacer | None = None,
    shard: tuple[str, str] = ("", ""),
    counters: Counters | None = None,
    meter: Meter = API_METER,
    before: Callable[[], None] | None = None,
    shield: bool = False,
    min_delay: float = 0.0,
) -> T:
    """``call()`` until it succeeds, fails fatally, or ``policy.max_attempts`` are spent.

    ``limiter`` paces each attempt and hears about throttling; ``shard`` (account, Region)
    labels the throttle counter; ``before`` runs before every attempt (e.g. the API's limit
    checks); ``shield`` protects each attempt from cancellation (a flush is never cut in half).
    """
    counters = counters if counters is not None else Counters()
    attempt = 0
    while True:
        attempt += 1
        if before is not None:
            before()
        counters.requests += 1
        try:
            result = await _attempt(call, limiter, shield)
        except errors.CollectorError as e:
            kind = classify(e)
            meter.requests.labels(operation, _outcome(e)).inc()
            if kind == "throttled":
                counters.throttles += 1
                if limiter is not None:
                    limiter.throttled()
                if meter.throttles is not None:
                    meter.throttles.labels(shard[0], shard[1], operation).inc()
            if kind == "fatal" or policy.exhausted(attempt):
                raise
            counters.retries += 1
            meter.retries.labels(operation, kind).inc()
            delay = policy.delay(attempt, rng) + min_delay
            say = log.warning if isinstance(e, errors.StorageError) else log.debug
            say("retry", operation=operation, attempt=attempt, delay=round(delay, 3), error=str(e))
            await clock.sleep(delay)
            continue
        meter.requests.labels(operation, "ok").inc()
        if limiter is not None:
            limiter.succeeded()
        return result


async def _attempt(call: Callable[[], Awaitable[T]], limiter: Pacer | None, shield: bool) -> T:
    with anyio.CancelScope(shield=shield):
        if limiter is None:
            result = await call()
        else:
            async with limiter:
                result = await call()
    return result
