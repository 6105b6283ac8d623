"""fetchers -> bounded channel -> writer, all owned by one task group.

Each (account, Region) gets its own small pool of workers, so one account's
quota never holds up another's. Completed slices (all their pages) go through a
bounded memory object stream to a single writer that batches them by size and
time and stores each batch atomically.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

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
from collector.ports import Clock, CompletedSlice, ConnectSource, MetricSink, WriteResult
from collector.ratelimit import Limiters
from collector.retry import OUTLAST, Counters, RetryPolicy, retry

log = structlog.get_logger("collector.pipeline")


@dataclass
class PipelineOptions:
    workers_per_key: int = 4
    channel_size: int = 16
    max_inflight: int = 64  # slices being fetched at once, across all accounts
    batch_rows: int = 20_000
    batch_seconds: float = 1.0
    write_attempts: int | None = 6  # None: wait out any database outage (the service)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Progress:
    """Callbacks for progress; the default does nothing."""

    def slices_written(self, keys: Sequence[SliceKey], rows: int) -> None:
        pass

    def slice_failed(self, key: SliceKey, reason: str) -> None:
        pass

    def counters(self, counters: Counters) -> None:
        pass


async def _write_with_retry(
    sink: MetricSink,
    batch: list[CompletedSlice],
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
    receive: MemoryObjectReceiveStream[CompletedSlice],
    sink: MetricSink,
    run_id: int | None,
    opts: PipelineOptions,
    clock: Clock,
    summary: RunSummary,
    progress: Progress,
    rng: random.Random,
) -> None:
    batch: list[CompletedSlice] = []
    rows = 0
    first_at = 0.0

    async def flush() -> None:
        nonlocal batch, rows
        if not batch:
            return
        result = await _write_with_retry(sink, batch, run_id, opts, clock, rng)
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
            item: CompletedSlice | None = None
            timeout = opts.batch_seconds - (clock.monotonic() - first_at) if batch else None
            with anyio.move_on_after(max(0.0, timeout) if timeout is not None else None):
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    closed = True
            if item is not None:
                if not batch:
                    first_at = clock.monotonic()
                batch.append(item)
                rows += item.rows
            if batch and (
                closed
                or rows >= opts.batch_rows
                or clock.monotonic() - first_at >= opts.batch_seconds
                or item is None
            ):
                await flush()


async def run_collection(
    works: Sequence[SliceWork],
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
) -> RunSummary:
    """Collect every slice of ``works``; failed slices are listed, never dropped silently."""
    opts = opts or PipelineOptions()
    progress = progress or Progress()
    rng = rng or random.Random()
    summary = RunSummary(slices_total=len(works))
    counters = Counters()
    queues: dict[tuple[str, str], deque[SliceWork]] = defaultdict(deque)
    for w in sorted(works, key=lambda w: (w.key.start, w.key.instance_id)):
        queues[w.target.limiter_key].append(w)

    send: MemoryObjectSendStream[CompletedSlice]
    send, receive = anyio.create_memory_object_stream[CompletedSlice](opts.channel_size)

    inflight = anyio.Semaphore(opts.max_inflight)

    async def worker(q: deque[SliceWork]) -> None:
        while q and not (stop and stop.is_set()):
            async with inflight:  # memory: whole slices are held until the writer takes them
                if not q:
                    return
                await _one(q.popleft())

    async def _one(work: SliceWork) -> None:
        try:
            done = await collect_slice(
                work, source=source, limiters=limiters, policy=opts.retry,
                clock=clock, rng=rng, counters=counters,
            )
        except SliceFailure as e:
            reason = e.detail
            summary.slices_failed += 1
            summary.failures.append((str(work.key), reason))
            log.error("slice_failed", slice=str(work.key), reason=reason)
            progress.slice_failed(work.key, reason)
            SLICES.labels("failed").inc()
            return
        finally:
            progress.counters(counters)
        await send.send(done)
        CHANNEL_DEPTH.set(send.statistics().current_buffer_used)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer_loop, receive, sink, run_id, opts, clock, summary, progress, rng)
        async with send, anyio.create_task_group() as fetchers:
            for q in queues.values():
                for _ in range(min(opts.workers_per_key, len(q))):
                    fetchers.start_soon(worker, q)
    summary.requests = counters.requests
    summary.retries = counters.retries
    summary.throttles = counters.throttles
    return summary
