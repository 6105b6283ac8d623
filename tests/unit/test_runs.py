"""collector.runs: the status rules, and a run settled through the Store port."""

from __future__ import annotations

import pytest

from collector import errors
from collector.apis import metric_apis
from collector.apis.v1.settings import CollectionSettings
from collector.clock import ManualClock
from collector.model import RunSummary
from collector.pipeline import PipelineOptions
from collector.ratelimit import Limiters
from collector.runs import execute, part_status, run_status
from collector.runtime import Runtime
from collector.writer import WriterOptions
from tests.fakes import InMemoryStore, ScriptedSource
from tests.unit.helpers import NOW, works


@pytest.mark.parametrize(
    "total, done, failed, status",
    [
        (4, 4, 0, "succeeded"),
        (4, 2, 2, "partial"),
        (4, 0, 4, "failed"),
        (4, 2, 0, "interrupted"),  # not every slice accounted for: stopped early
        (4, 1, 1, "interrupted"),
        (0, 0, 0, "succeeded"),  # nothing to do is done
    ],
)
def test_status_rules(total: int, done: int, failed: int, status: str) -> None:
    assert run_status(RunSummary(slices_total=total, slices_done=done, slices_failed=failed)) == status


@pytest.mark.parametrize("status, part", [("succeeded", "done"), ("partial", "done"), ("failed", "failed"),
                                          ("interrupted", "failed")])
def test_a_part_is_done_when_it_collected_what_it_could(status: str, part: str) -> None:
    assert part_status(status) == part


def _rt(store: InMemoryStore, source: ScriptedSource) -> Runtime:
    from collector.config import Settings

    clock = ManualClock(NOW)
    return Runtime(settings=Settings(), apis=metric_apis(CollectionSettings()), store=store, source=source, limiters=Limiters(clock=clock),
                   clock=clock, pipeline=PipelineOptions(writer=WriterOptions(batch_rows=1)))


async def test_a_run_with_lost_slices_ends_partial_with_every_reason() -> None:
    store, source = InMemoryStore(), ScriptedSource(pages={"i-1": [[(("q-1", None, None, None, None, None, None), [1.0])]]})
    rt = _rt(store, source)
    run_id = await store.create_run("cli", "default", None, None, ["i-1"], 3)
    summary = await execute(rt, works(2), run_id=run_id, lost=[("i-2@x", "queue discovery failed")])
    run = await store.get_run(run_id)
    assert run is not None and run.status == "partial" == run_status(summary)
    assert (summary.slices_total, summary.slices_done, summary.slices_failed) == (3, 2, 1)
    assert run.errors == [{"slice": "i-2@x", "reason": "queue discovery failed"}]
    assert run.slices_done == 2 and len(store.collected) == 2


async def test_a_run_whose_every_slice_fails_ends_failed_with_the_request_counts() -> None:
    store = InMemoryStore()
    source = ScriptedSource(failures=[errors.ClientBug("InvalidParameterException (400)")] * 2)
    rt = _rt(store, source)
    run_id = await store.create_run("cli", "default", None, None, ["i-1"], 2)
    summary = await execute(rt, works(2), run_id=run_id)
    run = await store.get_run(run_id)
    assert run is not None and run.status == "failed"
    assert summary.slices_failed == 2 and run.requests == 2 and run.retries == 0
    assert all("400" in e["reason"] for e in run.errors) and not store.collected


class _StartsWhileDatabaseAway(InMemoryStore):
    """``part_started`` fails ``down`` times as if the database were away."""

    def __init__(self, down: int) -> None:
        super().__init__(replica="r1")
        self.down = down

    async def part_started(self, run_id: int, shard: tuple[str, str], replica: str, slices: int) -> bool:
        if self.down:
            self.down -= 1
            raise errors.StorageError("connection refused")
        return await super().part_started(run_id, shard, replica, slices)


async def test_a_part_whose_start_meets_a_database_outage_goes_back_to_the_queue() -> None:
    from datetime import timedelta

    from collector.config import InstanceSettings, Settings
    from collector.runs import collect_part

    store = _StartsWhileDatabaseAway(down=1)
    settings = Settings(instances=[InstanceSettings(id="i-1", region="us-east-1", queues=["q-1"])])
    clock = ManualClock(NOW)
    rt = Runtime(settings=settings, apis=metric_apis(settings.collection), store=store, source=ScriptedSource(), limiters=Limiters(clock=clock),
                 clock=clock, pipeline=PipelineOptions(writer=WriterOptions(batch_rows=1, write_attempts=None)))
    end = NOW.replace(second=0) - timedelta(minutes=30)
    run_id = await store.queue_run("api", "default", end - timedelta(minutes=30), end, [])
    shard = ("default", "us-east-1")
    store.leases[shard] = ("r1", 1)
    await store.add_run_parts(run_id, [shard])
    part = await store.claim_part("r1", [shard], 15)
    assert part is not None and store.parts[(run_id, *shard)] == "running"
    assert await collect_part(rt, part, 1) is None  # no exception escapes
    assert store.parts[(run_id, *shard)] == "queued"  # back for whichever replica holds the shard
    run = await store.get_run(run_id)
    assert run is not None and run.errors == [] and run.slices_failed == 0
    again = await store.claim_part("r1", [shard], 15)  # and it runs to the end the next time
    assert again is not None
    await collect_part(rt, again, 1)
    assert store.parts[(run_id, *shard)] == "done"


async def test_a_part_whose_writes_were_fenced_goes_back_to_the_queue_not_failed() -> None:
    """Issue 18 item 3 (SIGTERM half): the lease moved on while the part's writes waited
    (it expired during a shutdown's grace period, or another replica took the shard over):
    the fenced slices are not this replica's to fail; the part goes back to the queue for
    whichever replica holds the shard (before: the part `failed` and the run with it)."""
    from datetime import timedelta

    from collector.config import InstanceSettings, Settings
    from collector.runs import collect_part

    store = InMemoryStore(replica="r1")
    settings = Settings(instances=[InstanceSettings(id="i-1", region="us-east-1", queues=["q-1"])])
    clock = ManualClock(NOW)
    rt = Runtime(settings=settings, apis=metric_apis(settings.collection), store=store, source=ScriptedSource(),
                 limiters=Limiters(clock=clock), clock=clock,
                 pipeline=PipelineOptions(writer=WriterOptions(batch_rows=1)))
    end = NOW.replace(second=0) - timedelta(minutes=30)
    run_id = await store.queue_run("api", "default", end - timedelta(minutes=30), end, [])
    shard = ("default", "us-east-1")
    store.leases[shard] = ("r1", 2)  # the lease moved on since generation 1 was held
    await store.add_run_parts(run_id, [shard])
    part = await store.claim_part("r1", [shard], 15)
    assert part is not None
    assert await collect_part(rt, part, 1) is None
    assert store.parts[(run_id, *shard)] == "queued"
    run = await store.get_run(run_id)
    assert run is not None and run.status not in ("failed", "partial") and run.slices_failed == 0
    assert not store.collected
