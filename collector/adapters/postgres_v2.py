"""GetMetricDataV2 slices into the same store as v1 (beside :class:`PgStore`'s v1 writer).

A V2 value lands in ``metric_values`` exactly as a v1 value does (a float8[] per
dimension group and metric set), so storage per value stays v1's and the views
serve both. What V2 adds lives in the registries: metric sets with thresholds
(LT/LTE/GT) and metric filters, dimension sets with the agent and the whole
Dimensions map. Re-collecting a slice replaces it as for v1 (the same staging,
delete-stale and upsert queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from collector.adapters.postgres import _PG_ERRORS, PgStore
from collector.errors import StorageError
from collector.ports import WriteResult
from collector.sqlfiles import q
from collector.v2 import catalog
from collector.v2.model import AgentInfo, CompletedSliceV2, DimsV2, MetricSetV2, ResourceInfo


def q2(name: str) -> str:
    """A V2 query (``collector/sql/v2.sql``; all named queries share one namespace)."""
    return q(name)


def metric_set_signature(ms: MetricSetV2) -> str:
    return "v2:" + orjson.dumps(
        [[m.name, m.unit, m.threshold, [[f.key, f.values, f.negate] for f in m.metric_filters]] for m in ms]
    ).decode()


def dims_key(d: DimsV2) -> str:
    return "v2:" + orjson.dumps(d).decode()


def _id(v: str | None) -> str | None:
    """Dimension values are IDs; take the ID where an ARN comes back."""
    return v.rsplit("/", 1)[-1] if v and v.startswith("arn:") else v


def dims_columns(d: DimsV2) -> tuple[str | None, ...]:
    """(queue_id, channel, routing_profile_id, routing_step_expression, subtype,
    validation_test_type, agent_id) from a result's Dimensions map."""
    m = dict(d)
    return (
        _id(m.get(catalog.QUEUE)), m.get(catalog.CHANNEL), _id(m.get(catalog.ROUTING_PROFILE)),
        m.get(catalog.ROUTING_STEP_EXPRESSION), m.get(catalog.SUBTYPE), m.get(catalog.VALIDATION_TEST_TYPE),
        _id(m.get(catalog.AGENT)),
    )


class PgStoreV2:
    """The V2 writer and resource registry, sharing :class:`PgStore`'s pool and id caches."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.pool = store.pool
        self._metric_sets: dict[MetricSetV2, int] = {}
        self._dims: dict[DimsV2, int] = {}

    async def metric_set_id(self, ms: MetricSetV2) -> int:
        mid = self._metric_sets.get(ms)
        if mid is not None:
            return mid
        sig = metric_set_signature(ms)
        async with self.pool.acquire() as conn, conn.transaction():
            mid = await conn.fetchval(q("insert_metric_set"), sig)
            if mid is None:
                mid = await conn.fetchval(q("find_metric_set"), sig)
            await conn.execute(
                q2("insert_metric_set_members_v2"),
                mid,
                [m.name for m in ms],
                [m.unit for m in ms],
                [None if m.threshold is None else m.threshold[1] for m in ms],
                [None if m.threshold is None else m.threshold[0] for m in ms],
                [
                    orjson.dumps([{"key": f.key, "values": list(f.values), "negate": f.negate}
                                  for f in m.metric_filters]).decode() if m.metric_filters else None
                    for m in ms
                ],
            )
        self._metric_sets[ms] = int(mid)
        return int(mid)

    async def dims_ids(self, dims: set[DimsV2]) -> None:
        missing = [d for d in dims if d not in self._dims]
        if not missing:
            return
        keys = [dims_key(d) for d in missing]
        cols = list(zip(*[dims_columns(d) for d in missing], strict=True))
        maps = [orjson.dumps(dict(d)).decode() if d else None for d in missing]
        async with self.pool.acquire() as conn:
            await conn.execute(q2("upsert_dimension_sets_v2"), keys, *[list(c) for c in cols], maps)
            found = {r["key"]: r["id"] for r in await conn.fetch(q("dimension_ids"), keys)}
        for d, k in zip(missing, keys, strict=True):
            self._dims[d] = found[k]

    # -- the writer ----------------------------------------------------------------
    async def write(self, batch: Sequence[CompletedSliceV2], run_id: int | None) -> WriteResult:
        """All slices of the batch (one or more windows) in one transaction, through the
        same transaction as GetMetricData slices (slice locks, fencing, newer wins)."""
        try:
            return await self._write(batch, run_id)
        except _PG_ERRORS as e:
            raise StorageError(f"{type(e).__name__}: {e}") from None

    async def _write(self, batch: Sequence[CompletedSliceV2], run_id: int | None) -> WriteResult:
        store = self.store
        await self.dims_ids({d for s in batch for _ms, rows in s.pages for d, _v in rows})
        await store.ensure_partitions(batch)
        prepared = await store.prepare(batch, self.metric_set_id, self._dims)
        return await store.write_prepared(batch, prepared, run_id)

    # -- resources for filters and joins -------------------------------------------------
    async def save_agents(self, instance_id: str, region: str, account: str | None,
                          agents: Sequence[AgentInfo]) -> None:
        ref = await self.store.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q2("upsert_agents"), ref, [a.id for a in agents], [a.arn for a in agents],
            [a.username for a in agents], [a.first_name for a in agents], [a.last_name for a in agents],
        )

    async def save_routing_profiles(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo]) -> None:
        ref = await self.store.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q2("upsert_routing_profiles"), ref, [r.id for r in items], [r.arn for r in items],
            [r.name for r in items],
        )

    async def save_hierarchy_groups(self, instance_id: str, region: str, account: str | None,
                                    items: Sequence[ResourceInfo], levels: Sequence[int | None] | None = None) -> None:
        ref = await self.store.instance_ref(instance_id, region, account)
        await self.pool.execute(
            q2("upsert_hierarchy_groups"), ref, [g.id for g in items], [g.arn for g in items],
            [g.name for g in items], list(levels) if levels is not None else [None] * len(items),
        )

    # -- the scheduler's lookups by slice start (a DST day is 23 or 25 hours) ------------
    async def _refs(self, instance_id: str, profile: str) -> tuple[int, int]:
        return await self.store.instance_ref(instance_id), await self.store.profile_id(profile)

    async def collected_starts_v2(
        self, instance_id: str, profile: str, start: datetime, end: datetime
    ) -> set[datetime]:
        rows = await self.pool.fetch(q2("collected_starts_v2"), *await self._refs(instance_id, profile), start, end)
        return {r["slice_start"] for r in rows}

    async def revisits_due_v2(
        self, instance_id: str, profile: str, delays: list[int], now: datetime, oldest: datetime
    ) -> list[datetime]:
        rows = await self.pool.fetch(
            q2("revisits_due_v2"), *await self._refs(instance_id, profile), delays, now, oldest
        )
        return [r["slice_start"] for r in rows]

    async def next_revisit_v2(
        self, instance_id: str, profile: str, delays: list[int], now: datetime, oldest: datetime
    ) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(
            q2("next_revisit_v2"), *await self._refs(instance_id, profile), delays, now, oldest
        )
        return value

    async def newest_collected_v2(self, instance_id: str, profile: str) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(
            q2("newest_collected_v2"), *await self._refs(instance_id, profile)
        )
        return value
