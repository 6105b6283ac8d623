"""The writer: completed slices from the bounded stream, batched by size and time, each
batch stored atomically (whole units only: a unit's slices are written together)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from collector.guard import ShardGuard
from collector.model import RunSummary, WriteResult
from collector.observability import DB_METER, FENCED, ROWS_WRITTEN, SLICES, VALUES_WRITTEN
from collector.ports import Clock, CompletedSlice, MetricSink
from collector.progress import Progress
from collector.retry import OUTLAST, RetryPolicy, retry

log = structlog.get_logger("collector.writer")


@dataclass
class WriterOptions:
    batch_rows: int = 20_000
    batch_seconds: float = 1.0
    write_attempts: int | None = 6  # None: wait out any database outage (the service)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class Writer:
    """Stores what the fetchers completed; tallies the run's summary as batches land."""

    sink: MetricSink
    run_id: int | None
    opts: WriterOptions
    clock: Clock
    summary: RunSummary
    progress: Progress
    rng: random.Random
    guard: ShardGuard | None = None

    async def run(self, receive: MemoryObjectReceiveStream[Sequence[CompletedSlice]]) -> None:
        """Until the stream ends: batch, and flush when the batch is big or old enough."""
        batch: list[CompletedSlice] = []
        rows, first_at, closed = 0, 0.0, False
        async with receive:
            while not closed:
                item: Sequence[CompletedSlice] | None = None
                with anyio.move_on_after(self._timeout(batch, first_at)):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        closed = True
                if item is not None:
                    if not batch:
                        first_at = self.clock.monotonic()
                    batch.extend(item)
                    rows += sum(s.rows for s in item)
                if batch and (closed or item is None or rows >= self.opts.batch_rows
                              or self.clock.monotonic() - first_at >= self.opts.batch_seconds):
                    await self.flush(batch)
                    batch, rows = [], 0

    def _timeout(self, batch: list[CompletedSlice], first_at: float) -> float | None:
        if not batch:
            return None
        return max(0.0, self.opts.batch_seconds - (self.clock.monotonic() - first_at))

    async def flush(self, batch: list[CompletedSlice]) -> None:
        try:
            result = await self._write(batch)
        finally:
            if self.guard is not None:
                self.guard.written((s.fence[0], s.fence[1]) for s in batch if s.fence is not None)
        self._fenced(result)
        self._written(batch, result)

    async def _write(self, batch: list[CompletedSlice]) -> WriteResult:
        policy = OUTLAST if self.opts.write_attempts is None else dataclasses.replace(
            self.opts.retry, max_attempts=self.opts.write_attempts)
        return await retry(
            lambda: self.sink.write(batch, self.run_id), operation="write", policy=policy, clock=self.clock,
            rng=self.rng, meter=DB_METER,
            shield=True,  # a flush is never cut in half
            min_delay=0.2,
        )

    def _fenced(self, result: WriteResult) -> None:
        """Another replica owns these slices' shards now and collects them; writing would put
        stale results over its newer ones. Slices of shards still held were written."""
        if not result.fenced:
            return
        FENCED.inc()
        self.summary.fenced += len(result.fenced)
        for key, reason in result.fenced:
            self.summary.slices_failed += 1
            self.summary.failures.append((str(key), reason))
            self.progress.slice_failed(key, reason)
        log.warning("slices_fenced", slices=len(result.fenced), reason=result.fenced[0][1])

    def _written(self, batch: list[CompletedSlice], result: WriteResult) -> None:
        lost = set(result.fenced_keys)
        written = [s for s in batch if s.key not in lost]
        self.summary.rows_written += result.rows
        self.summary.values_written += result.values
        self.summary.slices_done += len(written)
        ROWS_WRITTEN.inc(result.rows)
        VALUES_WRITTEN.inc(result.values)
        SLICES.labels("written").inc(len(written))
        log.info("batch_written", slices=len(written), rows=result.rows, values=result.values)
        if written:
            self.progress.slices_written([s.key for s in written], result.rows)
        for s in written:
            if s.on_stored is not None:
                s.on_stored()
