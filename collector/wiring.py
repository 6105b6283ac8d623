"""The composition root: settings in, a :class:`Runtime` out (adapters plugged into
ports, limiters, pipeline options). The only core module that imports adapters.

``collect``, ``check_collection`` (:mod:`collector.runs`) and ``shards``
(:mod:`collector.fleet`) are re-exported for the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import cast

import anyio
import structlog

from collector.adapters.connect import BotocoreConnect
from collector.adapters.embedded import embedded_dsn
from collector.adapters.postgres import PgStore, check_schema, connect_pool, migrate
from collector.adapters.postgres_v2 import PgStoreV2
from collector.clock import SystemClock
from collector.config import Settings, parse_duration
from collector.fleet import shards
from collector.pipeline import PipelineOptions
from collector.ports import Clock, ConnectSource, Runtime
from collector.ratelimit import Limiters
from collector.retry import RetryPolicy
from collector.runs import check_collection, collect
from collector.scheduler import ScheduleOptions
from collector.v2.ports import V2Ports, V2Source

__all__ = [
    "Runtime", "check_collection", "collect", "database_dsn", "limiters_for", "pipeline_options",
    "runtime", "schedule_options", "shards",
]

log = structlog.get_logger("collector.wiring")


def database_dsn(settings: Settings) -> str:
    return settings.database.dsn or embedded_dsn(settings.database.data_dir)


def limiters_for(settings: Settings, clock: Clock | None = None) -> Limiters:
    a = settings.aws
    per_account: dict[tuple[str, str], tuple[float, int]] = {}
    for acct in settings.accounts:
        assert acct.id is not None  # set from role_arn by validation
        if acct.get_metric_data_rate is not None or acct.get_metric_data_burst is not None:
            per_account[(acct.id, "GetMetricData")] = (
                acct.get_metric_data_rate or a.get_metric_data_rate,
                acct.get_metric_data_burst or a.get_metric_data_burst,
            )
        if acct.get_metric_data_v2_rate is not None or acct.get_metric_data_v2_burst is not None:
            per_account[(acct.id, "GetMetricDataV2")] = (
                acct.get_metric_data_v2_rate or a.get_metric_data_v2_rate,
                acct.get_metric_data_v2_burst or a.get_metric_data_v2_burst,
            )
        if acct.list_queues_rate is not None:
            per_account[(acct.id, "ListQueues")] = (acct.list_queues_rate, max(1, int(acct.list_queues_rate)))
    return Limiters(
        clock=clock,
        overrides={
            "GetMetricData": (a.get_metric_data_rate, a.get_metric_data_burst),
            "ListQueues": (a.list_queues_rate, max(1, int(a.list_queues_rate))),
            "GetMetricDataV2": (a.get_metric_data_v2_rate, a.get_metric_data_v2_burst),
        },
        account_overrides=per_account,
        headroom=a.rate_headroom,
    )


def v2_ports(store: PgStore, source: object) -> V2Ports | None:
    """GetMetricDataV2's store and source, when the source speaks V2 (``BotocoreConnect`` does)."""
    if not hasattr(source, "get_metric_data_v2"):
        return None
    return V2Ports(PgStoreV2(store), cast("V2Source", source))


def schedule_options(settings: Settings) -> ScheduleOptions:
    s = settings.scheduler
    return ScheduleOptions(
        settle=s.seconds("settle"),
        revisits=tuple(sorted(parse_duration(v) for v in s.revisits)),
        initial_backfill=s.seconds("initial_backfill"),
        catchup_batch=s.catchup_batch,
        lookback_margin=s.seconds("lookback_margin"),
        retry_after=s.seconds("retry_after"),
    )


def pipeline_options(settings: Settings) -> PipelineOptions:
    return PipelineOptions(
        workers_per_key=settings.aws.workers_per_account,
        max_inflight=settings.aws.max_inflight_slices,
        channel_size=settings.writer.channel_size,
        batch_rows=settings.writer.batch_rows,
        batch_seconds=settings.writer.batch_seconds,
        write_attempts=settings.writer.max_attempts,
        retry=RetryPolicy(max_attempts=settings.aws.max_attempts),
    )


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings,
    *,
    source: ConnectSource | None = None,
    clock: Clock | None = None,
    limiters: Limiters | None = None,
    auto_migrate: bool = True,
    outlast: bool = False,
) -> AsyncIterator[Runtime]:
    """``outlast`` (the service): writes and the end of a run wait out any database
    outage instead of giving up after ``writer.max_attempts`` (``write_attempts=None``)."""
    dsn = await anyio.to_thread.run_sync(database_dsn, settings)
    pool = await connect_pool(dsn, settings.database.pool_size)
    try:
        async with pool.acquire() as conn:
            if auto_migrate:
                await migrate(conn)
            else:
                await check_schema(conn)
        async with contextlib.AsyncExitStack() as stack:
            if source is None:
                source = await stack.enter_async_context(
                    BotocoreConnect(
                        connect_timeout=settings.aws.connect_timeout,
                        read_timeout=settings.aws.read_timeout,
                        fast_path=settings.aws.fast_path,
                    )
                )
            clock = clock or SystemClock()
            store = PgStore(pool, clock=clock)
            pipeline = pipeline_options(settings)
            if outlast:
                pipeline.write_attempts = None
            yield Runtime(
                settings=settings,
                store=store,
                source=source,
                limiters=limiters or limiters_for(settings, clock),
                clock=clock,
                pipeline=pipeline,
                v2=v2_ports(store, source),
            )
    finally:
        await pool.close()
