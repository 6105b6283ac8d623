"""Where the core meets the adapters: settings in, a running collection out."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import anyio
import structlog

from collector import errors
from collector.adapters.connect import BotocoreConnect
from collector.adapters.embedded import embedded_dsn
from collector.adapters.postgres import PgStore, check_schema, connect_pool, migrate
from collector.clock import SystemClock
from collector.config import InstanceSettings, Settings
from collector.model import RunSummary, SliceKey, SliceWork, Target
from collector.observability import RUN_DURATION, RUNS
from collector.pipeline import PipelineOptions, Progress, run_collection
from collector.planner import DEFAULT_PROFILE, plan, slices
from collector.ports import Clock, ConnectSource, QueueInfo
from collector.ratelimit import Limiters, RetryPolicy

log = structlog.get_logger("collector.wiring")


def database_dsn(settings: Settings) -> str:
    return settings.database.dsn or embedded_dsn(settings.database.data_dir)


def limiters_for(settings: Settings) -> Limiters:
    a = settings.aws
    return Limiters(
        overrides={
            "GetMetricData": (a.get_metric_data_rate, a.get_metric_data_burst),
            "ListQueues": (a.list_queues_rate, max(1, int(a.list_queues_rate))),
        }
    )


def pipeline_options(settings: Settings) -> PipelineOptions:
    return PipelineOptions(
        workers_per_key=settings.aws.workers_per_account,
        channel_size=settings.writer.channel_size,
        batch_rows=settings.writer.batch_rows,
        batch_seconds=settings.writer.batch_seconds,
        write_attempts=settings.writer.max_attempts,
        retry=RetryPolicy(max_attempts=settings.aws.max_attempts),
    )


@dataclass
class Runtime:
    settings: Settings
    store: PgStore
    source: ConnectSource
    limiters: Limiters
    clock: Clock


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings,
    *,
    source: ConnectSource | None = None,
    clock: Clock | None = None,
    limiters: Limiters | None = None,
    auto_migrate: bool = True,
) -> AsyncIterator[Runtime]:
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
            yield Runtime(
                settings=settings,
                store=PgStore(pool),
                source=source,
                limiters=limiters or limiters_for(settings),
                clock=clock or SystemClock(),
            )
    finally:
        await pool.close()


def _account_of(inst: InstanceSettings) -> str:
    return inst.account or (f"profile:{inst.aws_profile}" if inst.aws_profile else "default")


async def discover_queues(rt: Runtime, target: Target) -> list[QueueInfo]:
    """ListQueues (STANDARD) paged to the end, through the per-account limiter."""
    limiter = rt.limiters.get(target.account, target.region, "ListQueues")
    out: list[QueueInfo] = []
    token: str | None = None
    rng = random.Random()
    policy = RetryPolicy(max_attempts=rt.settings.aws.max_attempts)
    while True:
        attempt = 0
        while True:
            attempt += 1
            async with limiter:
                try:
                    items, token = await rt.source.list_queues(target, token)
                    break
                except (errors.Throttled, errors.TransientApiError) as e:
                    if attempt >= policy.max_attempts:
                        raise
                    failure = e
            log.debug("list_queues_retry", instance=target.instance_id, error=str(failure))
            await rt.clock.sleep(policy.delay(attempt, rng))
        out.extend(items)
        if not token:
            return out


def check_collection(
    settings: Settings, start: datetime, end: datetime, instances: Sequence[str], now: datetime,
    profile: str = DEFAULT_PROFILE,
) -> list[InstanceSettings]:
    """Refuse a collection that cannot be served, before any call or connection."""
    plan([], settings.collection, start, end, now, profile)
    return select_instances(settings, instances)


def select_instances(settings: Settings, instances: Sequence[str]) -> list[InstanceSettings]:
    configured = settings.instances
    if instances:
        known = {i.id for i in configured}
        unknown = [i for i in instances if i not in known]
        if unknown:
            raise errors.ConfigError(f"instance {unknown[0]!r} is not in the config's [[instances]]")
        configured = [i for i in configured if i.id in set(instances)]
    if not configured:
        raise errors.ConfigError("no [[instances]] configured; nothing to collect")
    return configured


async def resolve_targets(
    rt: Runtime, only: Sequence[str] = ()
) -> tuple[list[Target], list[tuple[str, str]]]:
    """Targets with their queues; an instance that cannot be resolved fails alone."""
    configured = select_instances(rt.settings, only)
    targets: list[Target] = []
    failed: list[tuple[str, str]] = []
    for inst in configured:
        base = Target(inst.id, inst.region, _account_of(inst), (), inst.aws_profile)
        await rt.store.instance_ref(inst.id, inst.region, inst.account)
        if inst.queues == "all":
            try:
                found = await discover_queues(rt, base)
            except errors.ApiError as e:
                log.error("instance_failed", instance=inst.id, reason=str(e))
                failed.append((inst.id, f"queue discovery failed: {e}"))
                continue
            await rt.store.save_queues(inst.id, inst.region, inst.account, found)
            queues = tuple(q.id for q in found)
            if not queues:
                failed.append((inst.id, "instance has no STANDARD queues"))
                continue
        else:
            queues = tuple(dict.fromkeys(q.rsplit("/", 1)[-1] for q in inst.queues))
        targets.append(
            Target(base.instance_id, base.region, base.account, queues, base.aws_profile)
        )
    return targets, failed


async def execute(
    rt: Runtime,
    works: Sequence[SliceWork],
    *,
    run_id: int,
    lost: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    kind: str = "oneoff",
) -> RunSummary:
    """Collect planned slices under a run row; the run always ends with a status."""
    status = "interrupted"
    summary = RunSummary(slices_total=len(works) + len(lost))
    started = rt.clock.monotonic()
    try:
        summary = await run_collection(
            works,
            source=rt.source,
            sink=rt.store,
            limiters=rt.limiters,
            clock=rt.clock,
            opts=pipeline_options(rt.settings),
            run_id=run_id,
            progress=progress,
            stop=stop,
        )
        summary.slices_total += len(lost)
        summary.slices_failed += len(lost)
        summary.failures[:0] = list(lost)
        if summary.slices_done + summary.slices_failed < summary.slices_total:
            status = "interrupted"
        elif summary.slices_failed == 0:
            status = "succeeded"
        elif summary.slices_done:
            status = "partial"
        else:
            status = "failed"
    finally:
        with anyio.CancelScope(shield=True):
            await rt.store.finish_run(
                run_id,
                status,
                summary.slices_failed,
                summary.requests,
                summary.retries,
                summary.throttles,
                [{"slice": k, "reason": r} for k, r in summary.failures],
            )
            RUNS.labels(kind, status).inc()
            RUN_DURATION.labels(kind, status).observe(rt.clock.monotonic() - started)
    log.info(
        "run_finished", run_id=run_id, status=status, slices_done=summary.slices_done,
        slices_failed=summary.slices_failed, rows=summary.rows_written,
    )
    return summary


async def collect(
    rt: Runtime,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    requested_by: str = "cli",
    profile: str = DEFAULT_PROFILE,
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    on_planned: object = None,
    run_id: int | None = None,
) -> tuple[int, RunSummary]:
    """Plan (refusing bad input before any call), record a run, collect, finish the run."""
    # Check the range before anything is discovered, so bad input costs no call.
    check_collection(rt.settings, start, end, instances, rt.clock.now(), profile)
    targets, failed_instances = await resolve_targets(rt, instances)
    works = plan(targets, rt.settings.collection, start, end, rt.clock.now(), profile)
    spans = slices(start, end, rt.settings.collection.granularity_seconds, rt.clock.now())
    lost = [
        (str(SliceKey(profile, iid, s, e)), reason)
        for iid, reason in failed_instances
        for s, e in spans
    ]
    names = [t.instance_id for t in targets] + [i for i, _r in failed_instances]
    if run_id is None:
        run_id = await rt.store.create_run(requested_by, profile, start, end, names, len(works) + len(lost))
    else:
        await rt.store.start_run(run_id, len(works) + len(lost), names)
    if callable(on_planned):
        on_planned(len(works) + len(lost))
    log.info("run_started", run_id=run_id, slices=len(works), instances=len(targets))
    summary = await execute(rt, works, run_id=run_id, lost=lost, progress=progress, stop=stop,
                            kind="oneoff" if requested_by != "scheduler" else "scheduled")
    return run_id, summary
