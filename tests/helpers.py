"""What the simulator holds vs. what landed in Postgres, as comparable multisets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from collector.apis.v1.decode import dims_of
from collector.apis.v1.planner import metric_chunks, slices
from collector.apis.v1.settings import CollectionSettings
from collector.simulator import Simulator

Row = tuple[object, ...]


def expected_rows(
    sim: Simulator, collection: CollectionSettings, start: datetime, end: datetime, now: datetime,
    instances: list[str] | None = None, profile: str = "default",
    provisional: Callable[[datetime, datetime], bool] = lambda s, e: False,
) -> Counter[Row]:
    out: Counter[Row] = Counter()
    wanted = [
        (m.name, m.threshold)
        for chunk in metric_chunks(collection.metric_names(), collection.service_levels)
        for m in chunk
    ]
    filters: dict[str, list[str]] = {"Channels": list(collection.channels)}
    for key, vals in (
        ("RoutingProfiles", collection.routing_profiles),
        ("AgentStatuses", collection.agent_statuses),
        ("Subtypes", collection.subtypes),
        ("ValidationTestTypes", collection.validation_test_types),
    ):
        if vals:
            filters[key] = list(vals)
    for iid, inst in sim.fleet.instances.items():
        if instances is not None and iid not in instances:
            continue
        f = {**filters, "Queues": list(inst.queues)}
        for s, e in slices(start, end, collection.granularity_seconds, now):
            for res in sim.expected(iid, s, e, list(collection.groupings), f, wanted, provisional(s, e)):
                dims = dims_of(res["Dimensions"])
                for c in res["Collections"]:
                    thr = c["Metric"].get("Threshold", {}).get("ThresholdValue")
                    out[(iid, s, e, *dims, c["Metric"]["Name"], thr, c.get("Value"), profile)] += 1
    return out


async def stored_rows(database_url: str) -> Counter[Row]:
    conn = await asyncpg.connect(database_url)
    try:
        recs = await conn.fetch(
            "SELECT instance_id, interval_start, interval_end, queue_id, channel, routing_profile_id,"
            " agent_status_id, routing_step_expression, subtype, validation_test_type, metric_name,"
            " threshold_value, value, profile FROM historical_metrics"
        )
    finally:
        await conn.close()
    return Counter(tuple(r) for r in recs)


async def snapshot(database_url: str) -> list[tuple[object, ...]]:
    """Every stored row with its physical identity and collected_at: any write shows up."""
    conn = await asyncpg.connect(database_url)
    try:
        recs = await conn.fetch(
            "SELECT ctid::text, xmin::text, instance_ref, slice_start, slice_seconds, profile_id,"
            " dims_id, metric_set_id, collected_at, vals FROM metric_values ORDER BY 3,4,5,6,7,8"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in recs]


def utc_floor(now: datetime, seconds: int) -> datetime:
    e = int(now.timestamp())
    return now - timedelta(seconds=e % seconds, microseconds=now.microsecond)


async def query(database_url: str, sql: str) -> list[asyncpg.Record]:
    """Rows of ``sql``, or none while the schema is not there yet."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def lease_owners(database_url: str) -> dict[str, int]:
    rows = await query(database_url, "SELECT owner, count(*) AS n FROM shard_leases"
                                     " WHERE owner IS NOT NULL AND expires_at > now() GROUP BY owner")
    return {r["owner"]: r["n"] for r in rows}


async def wait_until(predicate: Callable[[], Any], limit: float) -> None:
    """Poll another party's progress (only visible in the database) until true."""
    import anyio

    with anyio.fail_after(limit):
        while not await predicate():  # noqa: ASYNC110  (no event crosses replicas)
            await anyio.sleep(0.1)
