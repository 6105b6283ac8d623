"""ShardGuard: a shard handed back is cancelled in the pipeline, what was fetched is
written first, and its unfetched slices are handed over, not failed (fakes only)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest

from collector.apis import metric_apis
from collector.apis.v1.model import MetricDataRequest
from collector.apis.v1.settings import CollectionSettings
from collector.clock import ManualClock
from collector.guard import ShardGuard
from collector.model import Target
from collector.pipeline import PipelineOptions
from collector.ratelimit import Limiters
from collector.runs import execute
from collector.runtime import Runtime
from collector.writer import WriterOptions
from tests.fakes import InMemoryStore, Rows, ScriptedSource
from tests.unit.helpers import NOW, target, works

pytestmark = pytest.mark.unit

B = ("b1", "us-east-1")


@dataclass
class StallingSource(ScriptedSource):
    """Answers account a1 at once; account b1's second call never returns."""

    stalled: anyio.Event = field(default_factory=anyio.Event)

    async def get_metric_data(
        self, target: Target, request: MetricDataRequest, next_token: str | None
    ) -> tuple[Rows, str | None]:
        if target.account == "b1" and sum(1 for c in self.calls if c[1] == target.instance_id) >= 1:
            self.stalled.set()
            await anyio.sleep_forever()
        return await super().get_metric_data(target, request, next_token)


def _rt(store: InMemoryStore, source: ScriptedSource) -> Runtime:
    from collector.config import Settings

    clock = ManualClock(NOW)
    return Runtime(settings=Settings(), apis=metric_apis(CollectionSettings()), store=store, source=source, limiters=Limiters(clock=clock),
                   clock=clock, pipeline=PipelineOptions(workers_per_key=1, writer=WriterOptions(batch_rows=1)))


async def test_revoking_a_shard_mid_run_hands_its_slices_over_and_keeps_the_others() -> None:
    store, source = InMemoryStore(replica="r1"), StallingSource()
    store.leases = {("a1", "us-east-1"): ("r1", 1), B: ("r1", 1)}
    a = works(3, target("i-a", "a1", lease=1))
    b = works(3, target("i-b", "b1", lease=1))
    guard = ShardGuard()
    run_id = await store.create_run("scheduler", "default", None, None, ["i-a", "i-b"], 6)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            summary = await execute(_rt(store, source), a + b, run_id=run_id, guard=guard)
            assert (summary.slices_total, summary.slices_done, summary.handed_over) == (4, 4, 2)

        tg.start_soon(run)
        with anyio.fail_after(5):
            await source.stalled.wait()
        assert guard.busy([B])
        guard.revoke([B])
        with anyio.fail_after(5):
            await guard.drained([B])
    assert not guard.busy([B])
    stored = {sid[0] for sid in store.collected}
    assert stored == {"i-a", "i-b"} and len(store.collected) == 4  # b's first slice was written
    got = await store.get_run(run_id)
    assert got is not None and (got.status, got.slices_total, got.slices_done) == ("succeeded", 4, 4)


async def test_a_revoked_shard_is_not_started_until_it_is_allowed_again() -> None:
    store, source = InMemoryStore(replica="r1"), ScriptedSource()
    store.leases = {B: ("r1", 1)}
    guard = ShardGuard()
    guard.revoke([B])
    run_id = await store.create_run("scheduler", "default", None, None, ["i-b"], 2)
    summary = await execute(_rt(store, source), works(2, target("i-b", "b1", lease=1)), run_id=run_id, guard=guard)
    assert (summary.handed_over, summary.slices_total, source.calls) == (2, 0, [])
    guard.allow([B])
    summary = await execute(_rt(store, source), works(2, target("i-b", "b1", lease=1)), run_id=run_id, guard=guard)
    assert (summary.handed_over, summary.slices_done) == (0, 2)
