"""fetchers -> bounded channel -> writer, all owned by one task group.

Each (account, Region) gets its own small pool of workers, so one account's
quota never holds up another's. Completed slices (all their pages) go through a
bounded memory object stream to a single writer that batches them by size and
time and stores each batch atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector.fetch import SliceFailure, collect_slice
from collector.model import RunSummary, SliceKey, SliceWork
from collector.observability import (
    CHANNEL_DEPTH,
    DB_METER,
    FENCED,
    ROWS_WRITTEN,
    SLICES,
    VALUES_WRITTEN,
)
from collector.ports import Clock, ConnectSource, WriteResult
from collector.ratelimit import Limiters
from collector.retry import OUTLAST, Counters, RetryPolicy, retry

log = structlog.get_logger("collector.pipeline")

Shard = tuple[str, str]  # (account, Region)


class ShardGuard:
    """The shards this process may work on, and its work in flight per shard: revoking a
    shard (its lease is handed back or lost) cancels that shard's fetchers in every pipeline,
    and :meth:`drained` waits until what they completed has been written."""

    def __init__(self) -> None:
        self._scopes: dict[Shard, set[anyio.CancelScope]] = defaultdict(set)
        self._pending: Counter[Shard] = Counter()  # completed slices not yet written
        self._revoked: set[Shard] = set()
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @contextlib.contextmanager
    def working(self, shard: Shard) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            if shard in self._revoked:
                scope.cancel()
            self._scopes[shard].add(scope)
            try:
                yield scope
            finally:
                self._scopes[shard].discard(scope)
                self._notify()

    def sent(self, shard: Shard) -> None:
        self._pending[shard] += 1

    def written(self, shards: Iterable[Shard]) -> None:
        for shard in shards:
            self._pending[shard] -= 1
        self._notify()

    def revoke(self, shards: Iterable[Shard]) -> None:
        for shard in shards:
            self._revoked.add(shard)
            for scope in list(self._scopes[shard]):
                scope.cancel()

    def allow(self, shards: Iterable[Shard]) -> None:
        self._revoked.difference_update(shards)

    def busy(self, shards: Iterable[Shard]) -> bool:
        return any(self._scopes[s] or self._pending[s] > 0 for s in shards)

    async def drained(self, shards: Sequence[Shard]) -> None:
        """Until no fetcher of ``shards`` runs and their completed slices are written."""
        while self.busy(shards):
            await self._changed.wait()


@dataclass
class PipelineOptions:
    workers_per_key: int = 4
    channel_size: int = 16
    max_inflight: int = 64  # slices being fetched at once, across all accounts
    batch_rows: int = 20_000
    batch_seconds: float = 1.0
    write_attempts: int | None = 6  # None: wait out any database outage (the service)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Stored(Protocol):
    """A completed slice as the writer sees it (``CompletedSlice``, ``CompletedSliceV2``)."""

    @property
    def key(self) -> SliceKey: ...

    @property
    def rows(self) -> int: ...

    @property
    def fence(self) -> tuple[str, str, int] | None: ...


class Sink(Protocol):
    """Stores a batch of completed slices atomically (``PgStore``, ``PgStoreV2``)."""

    async def write(self, batch: Sequence[Any], run_id: int | None) -> WriteResult: ...


@dataclass
class FetchContext:
    """What a unit of fetch work gets from the pipeline: the one retry path's pieces."""

    source: ConnectSource
    limiters: Limiters
    policy: RetryPolicy
    clock: Clock
    rng: random.Random
    counters: Counters


class FetchUnit(Protocol):
    """A unit of fetch work: every request of it paged to the end through the retry path,
    under the limiter of (``limiter_key``, ``api``); ``fetch`` returns the slices it
    completed, written together in one batch, or raises :class:`SliceFailure` (which
    fails every slice of ``slice_keys``). A v1 :class:`SliceWork` is one slice; a V2
    window is many (:class:`collector.v2.work.WindowUnit`)."""

    @property
    def limiter_key(self) -> tuple[str, str]: ...

    @property
    def api(self) -> str: ...

    @property
    def order(self) -> tuple[datetime, str]: ...

    @property
    def slice_keys(self) -> Sequence[SliceKey]: ...

    async def fetch(self, ctx: FetchContext) -> Sequence[Stored]: ...


@dataclass(frozen=True, slots=True)
class SliceUnit:
    """A v1 slice as a :class:`FetchUnit`."""

    work: SliceWork
    api: str = "GetMetricData"

    @property
    def limiter_key(self) -> tuple[str, str]:
        return self.work.target.limiter_key

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.work.key.start, self.work.key.instance_id)

    @property
    def slice_keys(self) -> Sequence[SliceKey]:
        return (self.work.key,)

    async def fetch(self, ctx: FetchContext) -> Sequence[Stored]:
        done = await collect_slice(
            self.work, source=ctx.source, limiters=ctx.limiters, policy=ctx.policy,
            clock=ctx.clock, rng=ctx.rng, counters=ctx.counters,
        )
        return (done,)


def as_unit(work: SliceWork | FetchUnit) -> FetchUnit:
    return SliceUnit(work) if isinstance(work, SliceWork) else work


class Progress:
    """Callbacks for progress; the default does nothing."""

    def slices_written(self, keys: Sequence[SliceKey], rows: int) -> None:
        pass

    def slice_failed(self, key: SliceKey, reason: str) -> None:
        pass

    def counters(self, counters: Counters) -> None:
        pass


async def _write_with_retry(
    sink: Sink,
    batch: list[Stored],
    run_id: int | None,
    opts: PipelineOptions,
    clock: Clock,
    rng: random.Random,
) -> WriteResult:
    return await retry(
        lambda: sink.write(batch, run_id),
        operation="write",
        policy=OUTLAST if opts.write_attempts is None else dataclasses.replace(
            opts.retry, max_attempts=opts.write_attempts),
        clock=clock,
        rng=rng,
        meter=DB_METER,
        shield=True,  # a flush is never cut in half
        min_delay=0.2,
    )


async def writer_loop(
    receive: MemoryObjectReceiveStream[Sequence[Stored]],
    sink: Sink,
    run_id: int | None,
    opts: PipelineOptions,
    clock: Clock,
    summary: RunSummary,
    progress: Progress,
    rng: random.Random,
    guard: ShardGuard | None = None,
) -> None:
    batch: list[Stored] = []  # whole units only: a unit's slices are written together
    rows = 0
    first_at = 0.0

    async def flush() -> None:
        nonlocal batch, rows
        if not batch:
            return
        try:
            result = await _write_with_retry(sink, batch, run_id, opts, clock, rng)
        finally:
            if guard is not None:
                guard.written((s.fence[0], s.fence[1]) for s in batch if s.fence is not None)
        if result.fenced:
            # Another replica owns these slices' shards now and collects them; writing would
            # put stale results over its newer ones. Slices of shards still held were written.
            FENCED.inc()
            for key, reason in result.fenced:
                summary.slices_failed += 1
                summary.failures.append((str(key), reason))
                progress.slice_failed(key, reason)
            log.warning("slices_fenced", slices=len(result.fenced), reason=result.fenced[0][1])
        lost = set(result.fenced_keys)
        written = [s for s in batch if s.key not in lost]
        written_rows, written_values = result.rows, result.values
        summary.rows_written += written_rows
        summary.values_written += written_values
        summary.slices_done += len(written)
        ROWS_WRITTEN.inc(written_rows)
        VALUES_WRITTEN.inc(written_values)
        SLICES.labels("written").inc(len(written))
        log.info("batch_written", slices=len(written), rows=written_rows, values=written_values)
        if written:
            progress.slices_written([s.key for s in written], written_rows)
        batch, rows = [], 0

    async with receive:
        closed = False
        while not closed:
            item: Sequence[Stored] | None = None
            timeout = opts.batch_seconds - (clock.monotonic() - first_at) if batch else None
            with anyio.move_on_after(max(0.0, timeout) if timeout is not None else None):
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    closed = True
            if item is not None:
                if not batch:
                    first_at = clock.monotonic()
                batch.extend(item)
                rows += sum(s.rows for s in item)
            if batch and (
                closed
                or rows >= opts.batch_rows
                or clock.monotonic() - first_at >= opts.batch_seconds
                or item is None
            ):
                await flush()


async def run_collection(
    works: Sequence[SliceWork | FetchUnit],
    *,
    source: ConnectSource,
    sink: Sink,
    limiters: Limiters,
    clock: Clock,
    opts: PipelineOptions | None = None,
    run_id: int | None = None,
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    rng: random.Random | None = None,
    guard: ShardGuard | None = None,
) -> RunSummary:
    """Collect every slice of ``works`` (v1 slices or other :class:`FetchUnit` s); failed
    slices are listed, never dropped silently. With a ``guard``, the slices of a shard it
    revokes are handed over (``summary.handed_over``, left out of ``slices_total``): the
    shard's new owner collects them."""
    opts = opts or PipelineOptions()
    progress = progress or Progress()
    rng = rng or random.Random()
    units = [as_unit(w) for w in works]
    summary = RunSummary(slices_total=sum(len(u.slice_keys) for u in units))
    counters = Counters()
    ctx = FetchContext(source, limiters, opts.retry, clock, rng, counters)
    # one pool of workers per (account, Region, API): each API has its own quota
    queues: dict[tuple[str, str, str], deque[FetchUnit]] = defaultdict(deque)
    for u in sorted(units, key=lambda u: u.order):
        queues[(*u.limiter_key, u.api)].append(u)

    send: MemoryObjectSendStream[Sequence[Stored]]
    send, receive = anyio.create_memory_object_stream[Sequence[Stored]](opts.channel_size)

    inflight = anyio.Semaphore(opts.max_inflight)
    handed = [0]

    async def worker(q: deque[FetchUnit], shard: Shard) -> None:
        with guard.working(shard) if guard is not None else anyio.CancelScope() as scope:
            while q and not (stop and stop.is_set()):
                async with inflight:  # memory: whole slices are held until the writer takes them
                    if not q:
                        return
                    unit = q.popleft()
                    ok = False
                    try:
                        await _one(unit)
                        ok = True
                    finally:  # cancelled mid-unit: its shard was handed back
                        handed[0] += 0 if ok else len(unit.slice_keys)
        if scope.cancelled_caught:
            handed[0] += sum(len(u.slice_keys) for u in q)
            q.clear()

    async def _one(work: FetchUnit) -> None:
        try:
            done = await work.fetch(ctx)
        except SliceFailure as e:
            reason = e.detail
            for key in work.slice_keys:
                summary.slices_failed += 1
                summary.failures.append((str(key), reason))
                log.error("slice_failed", slice=str(key), reason=reason)
                progress.slice_failed(key, reason)
            SLICES.labels("failed").inc(len(work.slice_keys))
            return
        finally:
            progress.counters(counters)
        await send.send(done)
        if guard is not None:
            for s in done:
                if s.fence is not None:
                    guard.sent((s.fence[0], s.fence[1]))
        CHANNEL_DEPTH.set(send.statistics().current_buffer_used)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer_loop, receive, sink, run_id, opts, clock, summary, progress, rng, guard)
        async with send, anyio.create_task_group() as fetchers:
            for (account, region, _api), q in queues.items():
                for _ in range(min(opts.workers_per_key, len(q))):
                    fetchers.start_soon(worker, q, (account, region))
    if handed[0]:
        summary.handed_over = handed[0]
        summary.slices_total -= handed[0]
        log.info("slices_handed_over", slices=handed[0])
    summary.requests = counters.requests
    summary.retries = counters.retries
    summary.throttles = counters.throttles
    return summary
