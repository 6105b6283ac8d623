"""collector.pipeline's writer: batching by rows, the flush at the end, retries of a
failed write, and fencing (a batch whose lease moved on is refused, its slices failed)."""

from __future__ import annotations

import random

import pytest

from collector import errors
from collector.apis.v1.model import Dims
from collector.clock import ManualClock
from collector.model import RunSummary
from collector.pipeline import PipelineOptions, run_collection
from collector.ratelimit import Limiters
from collector.retry import RetryPolicy
from collector.writer import WriterOptions
from tests.fakes import InMemoryStore, ScriptedSource
from tests.unit.helpers import NOW, target, works

ROW: tuple[Dims, list[float | None]] = (("q-1", None, None, None, None, None, None), [1.0])


def _source(rows_per_slice: int = 1) -> ScriptedSource:
    return ScriptedSource(pages={"i-1": [[ROW] * rows_per_slice]})


async def _run(store: InMemoryStore, n: int, opts: PipelineOptions, lease: int | None = None) -> RunSummary:
    clock = ManualClock(NOW)
    return await run_collection(
        works(n, target(lease=lease)),
        source=_source(),
        sink=store,
        limiters=Limiters(clock=clock),
        clock=clock,
        opts=opts,
        rng=random.Random(1),
    )


async def test_batches_are_cut_at_batch_rows() -> None:
    store = InMemoryStore()
    summary = await _run(
        store, 6, PipelineOptions(workers_per_key=1, writer=WriterOptions(batch_rows=2, batch_seconds=3600))
    )
    assert [len(b) for b in store.writes] == [2, 2, 2]
    assert (summary.slices_done, summary.rows_written, summary.values_written) == (6, 6, 6)


async def test_what_is_left_is_flushed_when_the_fetchers_are_done() -> None:
    store = InMemoryStore()
    summary = await _run(
        store,
        5,
        PipelineOptions(workers_per_key=1, writer=WriterOptions(batch_rows=1000, batch_seconds=3600)),
    )
    assert sum(len(b) for b in store.writes) == 5 and summary.slices_done == 5
    assert len(store.collected) == 5


async def test_a_failed_write_is_retried_and_lands_once() -> None:
    store = InMemoryStore(fail_writes=[errors.StorageError("connection reset"), errors.StorageError("again")])
    summary = await _run(
        store,
        3,
        PipelineOptions(
            retry=RetryPolicy(base=0.01, cap=0.01), writer=WriterOptions(batch_rows=1000, batch_seconds=3600)
        ),
    )
    assert summary.slices_done == 3 and summary.slices_failed == 0
    assert all(c.times == 1 for c in store.collected.values())


async def test_a_write_that_keeps_failing_raises_after_write_attempts() -> None:
    store = InMemoryStore(fail_writes=[errors.StorageError(f"down #{i}") for i in range(10)])
    with pytest.raises(BaseException) as info:  # the task group wraps it
        await _run(
            store,
            2,
            PipelineOptions(retry=RetryPolicy(base=0.01, cap=0.01), writer=WriterOptions(write_attempts=3)),
        )
    group = info.value
    assert isinstance(group, BaseExceptionGroup) and group.subgroup(errors.StorageError) is not None
    assert len(store.fail_writes) == 10 - 3 and not store.collected


async def test_a_batch_whose_lease_moved_on_is_refused_and_its_slices_fail() -> None:
    store = InMemoryStore(replica="r1")
    store.leases[("a1", "us-east-1")] = ("r2", 8)  # taken over: generation 8 now, not ours
    summary = await _run(store, 3, PipelineOptions(writer=WriterOptions(batch_rows=1000)), lease=7)
    assert summary.slices_done == 0 and summary.slices_failed == 3
    assert all("lease" in reason for _k, reason in summary.failures)
    assert not store.collected and not store.writes


async def test_a_batch_under_a_held_lease_is_written() -> None:
    store = InMemoryStore(replica="r1")
    store.leases[("a1", "us-east-1")] = ("r1", 7)
    summary = await _run(store, 3, PipelineOptions(writer=WriterOptions(batch_rows=1000)), lease=7)
    assert summary.slices_done == 3 and {s.fence for b in store.writes for s in b} == {("a1", "us-east-1", 7)}
