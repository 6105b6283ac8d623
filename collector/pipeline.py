"""fetchers -> bounded channel -> writer, all owned by one task group.

Each (account, Region, API) gets its own small pool of workers, so one account's
quota never holds up another's. The units' completed slices go through a bounded
memory object stream to a single writer (:mod:`collector.writer`) that batches them
by size and time and stores each batch atomically. Nothing here knows which metric
API a unit belongs to.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from collector.fetch import FetchContext, SliceFailure, fetch_unit
from collector.guard import ShardGuard
from collector.model import RunSummary, Shard
from collector.observability import CHANNEL_DEPTH, SLICES
from collector.ports import Clock, CompletedSlice, ConnectSource, FetchUnit, MetricSink
from collector.progress import Progress
from collector.ratelimit import Limiters
from collector.retry import Counters, RetryPolicy
from collector.writer import Writer, WriterOptions

log = structlog.get_logger("collector.pipeline")

WorkQueue = deque[FetchUnit]


@dataclass
class PipelineOptions:
    workers_per_key: int = 4
    channel_size: int = 16
    max_inflight: int = 64  # units being fetched at once, across all accounts
    writer: WriterOptions = field(default_factory=WriterOptions)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def queues_of(units: Sequence[FetchUnit]) -> dict[tuple[str, str, str], WorkQueue]:
    """One queue per (account, Region, API), oldest first: each API has its own quota."""
    queues: dict[tuple[str, str, str], WorkQueue] = defaultdict(deque)
    for u in sorted(units, key=lambda u: (u.slice_keys[0].start, u.target.instance_id)):
        queues[(*u.target.limiter_key, u.operation)].append(u)
    return queues


@dataclass
class _Fetchers:
    """The fetch side of one collection: workers take units off their shard's queue."""

    ctx: FetchContext
    send: MemoryObjectSendStream[Sequence[CompletedSlice]]
    inflight: anyio.Semaphore
    summary: RunSummary
    progress: Progress
    stop: anyio.Event | None
    guard: ShardGuard | None
    handed: int = 0  # slices of revoked shards, left to their new owner

    async def worker(self, q: WorkQueue, shard: Shard) -> None:
        with self.guard.working(shard) if self.guard is not None else anyio.CancelScope() as scope:
            while q and not (self.stop and self.stop.is_set()):
                async with self.inflight:  # memory: whole units are held until the writer takes them
                    if not q:
                        return
                    unit = q.popleft()
                    if unit.deadline is not None and self.ctx.clock.now() >= unit.deadline:
                        self.failed(unit, "its period passed before it could be fetched")
                        continue
                    ok = False
                    try:
                        await self.one(unit)
                        ok = True
                    finally:  # cancelled mid-unit: its shard was handed back
                        self.handed += 0 if ok else len(unit.slice_keys)
        if scope.cancelled_caught:
            self.handed += sum(len(u.slice_keys) for u in q)
            q.clear()

    async def one(self, unit: FetchUnit) -> None:
        try:
            done = await fetch_unit(unit, self.ctx)
        except SliceFailure as e:
            self.failed(unit, e.detail)
            return
        finally:
            self.progress.counters(self.ctx.counters)
        await self.send.send(done)
        if self.guard is not None:
            for s in done:
                if s.fence is not None:
                    self.guard.sent((s.fence[0], s.fence[1]))
        CHANNEL_DEPTH.set(self.send.statistics().current_buffer_used)

    def failed(self, unit: FetchUnit, reason: str) -> None:
        for key in unit.slice_keys:
            self.summary.slices_failed += 1
            self.summary.failures.append((str(key), reason))
            log.error("slice_failed", slice=str(key), reason=reason)
            self.progress.slice_failed(key, reason)
        SLICES.labels("failed").inc(len(unit.slice_keys))


async def run_collection(
    units: Sequence[FetchUnit],
    *,
    source: ConnectSource,
    sink: MetricSink,
    limiters: Limiters,
    clock: Clock,
    opts: PipelineOptions | None = None,
    run_id: int | None = None,
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    rng: random.Random | None = None,
    guard: ShardGuard | None = None,
) -> RunSummary:
    """Collect every slice of ``units``; failed slices are listed, never dropped silently.
    With a ``guard``, the slices of a shard it revokes are handed over
    (``summary.handed_over``, left out of ``slices_total``): the shard's new owner
    collects them."""
    opts = opts or PipelineOptions()
    progress = progress or Progress()
    rng = rng or random.Random()
    summary = RunSummary(slices_total=sum(len(u.slice_keys) for u in units))
    ctx = FetchContext(source, limiters, opts.retry, clock, rng, Counters())
    send, receive = anyio.create_memory_object_stream[Sequence[CompletedSlice]](opts.channel_size)
    fetchers = _Fetchers(ctx, send, anyio.Semaphore(opts.max_inflight), summary, progress, stop, guard)
    writer = Writer(sink, run_id, opts.writer, clock, summary, progress, rng, guard)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run, receive)
        async with send, anyio.create_task_group() as workers:
            for (account, region, _api), q in queues_of(units).items():
                for _ in range(min(opts.workers_per_key, len(q))):
                    workers.start_soon(fetchers.worker, q, (account, region))
    _settle_counts(summary, fetchers.handed, ctx.counters)
    return summary


def _settle_counts(summary: RunSummary, handed: int, counters: Counters) -> None:
    if handed:
        summary.handed_over = handed
        summary.slices_total -= handed
        log.info("slices_handed_over", slices=handed)
    summary.requests = counters.requests
    summary.retries = counters.retries
    summary.throttles = counters.throttles
