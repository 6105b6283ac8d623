"""The composition root: settings in, a :class:`Runtime` out (adapters plugged into
ports, each profile on its metric API, limiters, the rooms' own options), and the
service started on it. The only module besides the CLI that imports adapters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime

import anyio
import structlog

from collector import apis
from collector.adapters.connect import BotocoreConnect
from collector.adapters.embedded import embedded_dsn
from collector.adapters.postgres import PgStore, check_schema, connect_pool, migrate
from collector.apis.current.gauges import GAUGES
from collector.clock import SystemClock
from collector.config import Settings
from collector.durations import parse_duration
from collector.model import ScheduleOptions
from collector.pipeline import PipelineOptions
from collector.ports import Clock, ConnectSource, MetricApi, Registry
from collector.ratelimit import Limiters
from collector.retry import RetryPolicy
from collector.runtime import Runtime
from collector.writer import WriterOptions

log = structlog.get_logger("collector.wiring")


def database_dsn(settings: Settings) -> str:
    return settings.database.dsn or embedded_dsn(settings.database.data_dir)


# operation -> the [aws] / [[accounts]] key prefix of its rate and burst
_QUOTA_KEYS = {
    "GetMetricData": "get_metric_data",
    "GetMetricDataV2": "get_metric_data_v2",
    "GetCurrentMetricData": "get_current_metric_data",
    "GetCurrentUserData": "get_current_user_data",
}


def limiters_for(settings: Settings, clock: Clock | None = None) -> Limiters:
    a = settings.aws
    per_account: dict[tuple[str, str], tuple[float, int]] = {}
    for acct in settings.accounts:
        assert acct.id is not None  # set from role_arn by validation
        for op, key in _QUOTA_KEYS.items():
            rate, burst = getattr(acct, f"{key}_rate"), getattr(acct, f"{key}_burst")
            if rate is not None or burst is not None:
                per_account[(acct.id, op)] = (rate or getattr(a, f"{key}_rate"), burst or getattr(a, f"{key}_burst"))
        if acct.list_queues_rate is not None:
            per_account[(acct.id, "ListQueues")] = (acct.list_queues_rate, max(1, int(acct.list_queues_rate)))
    overrides = {op: (getattr(a, f"{key}_rate"), getattr(a, f"{key}_burst")) for op, key in _QUOTA_KEYS.items()}
    overrides["ListQueues"] = (a.list_queues_rate, max(1, int(a.list_queues_rate)))
    return Limiters(clock=clock, overrides=overrides, account_overrides=per_account, headroom=a.rate_headroom)


def metric_apis(settings: Settings) -> dict[str, MetricApi]:
    """Every profile by name, on its metric API."""
    return apis.metric_apis(settings.collection, settings.profiles)


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


def pipeline_options(settings: Settings, outlast: bool = False) -> PipelineOptions:
    """``outlast`` (the service): writes wait out any database outage."""
    w = settings.writer
    return PipelineOptions(
        workers_per_key=settings.aws.workers_per_account,
        max_inflight=settings.aws.max_inflight_slices,
        channel_size=w.channel_size,
        writer=WriterOptions(batch_rows=w.batch_rows, batch_seconds=w.batch_seconds,
                             write_attempts=None if outlast else w.max_attempts),
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
    GAUGES.cap = settings.realtime.max_gauge_series
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
                connect = BotocoreConnect(
                    connect_timeout=settings.aws.connect_timeout, read_timeout=settings.aws.read_timeout,
                    # a role's client serves one account: the fetchers of its metric APIs
                    # (each up to workers_per_account at once) and one listing
                    role_pool_connections=4 * settings.aws.workers_per_account + 1,
                    fast_path=settings.aws.fast_path,
                )
                source = connect
                await stack.enter_async_context(connect)
            clock = clock or SystemClock()
            store = PgStore(pool, clock=clock)
            profiles = metric_apis(settings)
            await describe(store, settings, profiles)
            yield Runtime(
                settings=settings,
                store=store,
                source=source,
                limiters=limiters or limiters_for(settings, clock),
                clock=clock,
                pipeline=pipeline_options(settings, outlast),
                apis=profiles,
            )
    finally:
        await pool.close()


async def describe(store: Registry, settings: Settings, profiles: Mapping[str, MetricApi]) -> None:
    """Record in the store what SQL needs to know of the config: each profile's API,
    interval and time zone, and the names the config gives instances."""
    for name, api in profiles.items():
        await store.register_profile(name, api.info)
    for inst in settings.instances:
        if inst.name:
            await store.name_instance(inst.id, inst.region, inst.account, inst.name)


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    source: ConnectSource | None = None,
    limiters: Limiters | None = None,
    stop: anyio.Event | None = None,
    until: datetime | None = None,
    with_api: bool = True,
    handle_signals: bool = True,
    on_ready: Callable[[str | None], None] | None = None,
    on_run_finished: Callable[[int], None] | None = None,
) -> None:
    """Run the service until ``stop`` (or a signal, or ``until`` on the clock)."""
    from collector.service import Service  # the HTTP stack: only for the service

    async with runtime(settings, source=source, clock=clock, limiters=limiters, outlast=True) as rt:
        service = Service(rt, schedule_options(settings), stop=stop, until=until, on_run_finished=on_run_finished)
        await service.run(with_api=with_api, handle_signals=handle_signals, on_ready=on_ready)
