"""A scheduler round over hundreds of instances and both metric APIs costs a bounded number
of store queries on real Postgres (issue 17 item 2: not five per instance and profile)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from collector.adapters.postgres import PgStore, migrate
from collector.apis.v1.api import V1Api
from collector.apis.v1.settings import CollectionSettings
from collector.apis.v2.api import V2Api
from collector.apis.v2.settings import V2ProfileSettings
from collector.model import ScheduleOptions, Target
from collector.ports import MetricApi
from collector.scheduler import advance_frontiers, plan_round

NOW = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)


class CountingPool:
    """The store's pool, counting the statements sent through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.calls = pool, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.pool, name)
        if name in ("fetch", "fetchval", "fetchrow", "execute", "acquire"):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attr(*args, **kwargs)
            return counted
        return attr


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert p is not None
    async with p.acquire() as conn:
        await migrate(conn)
    yield p
    await p.close()


async def test_a_round_over_300_instances_and_two_apis_is_a_handful_of_queries(pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    store = PgStore(counting)  # type: ignore[arg-type]
    targets = [Target(f"i-{n:03d}", "us-east-1", "111111111111", ("q1",)) for n in range(300)]
    for t in targets:  # the fleet's resolution registers every instance before a round is planned
        await store.instance_ref(t.instance_id, t.region, t.account)
    apis: list[MetricApi] = [V1Api("default", CollectionSettings(groupings=["QUEUE"], metrics=["CONTACTS_HANDLED"], service_levels=[])),
            V2Api(V2ProfileSettings.model_validate({"name": "hourly", "api": "v2", "interval": "1h",
                                                    "groupings": ["QUEUE"], "metrics": ["CONTACTS_HANDLED"],
                                                    "filters": {"queues": "all"}}))]
    opts = ScheduleOptions(settle=900, revisits=(3600,), initial_backfill=3600)
    await store.profile_id("default")
    await store.profile_id("hourly")
    counting.calls = 0
    first = await plan_round(store, targets, apis, opts, NOW)
    assert {k.instance_id for u in first.units for k in u.slice_keys} == {t.instance_id for t in targets}
    assert counting.calls == 2  # one read of every series, one write of the 600 new frontiers
    counting.calls = 0
    await advance_frontiers(store, targets, apis, NOW, opts)
    again = await plan_round(store, targets, apis, opts, NOW)
    assert counting.calls <= 4 and again.units  # nothing collected: the same slices, same cost
