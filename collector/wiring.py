"""Where the core meets the adapters: settings in, a running collection out."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import structlog

from collector import errors
from collector.adapters.connect import BotocoreConnect
from collector.adapters.embedded import embedded_dsn
from collector.adapters.postgres import PgStore, check_schema, connect_pool, migrate
from collector.clock import SystemClock
from collector.config import AccountSettings, CollectionSettings, InstanceSettings, Settings
from collector.model import RunSummary, SliceKey, SliceWork, Target
from collector.observability import RUN_DURATION, RUNS
from collector.pipeline import PipelineOptions, Progress, run_collection
from collector.planner import DEFAULT_PROFILE, plan, slices
from collector.ports import Clock, ConnectSource, QueueInfo
from collector.ratelimit import Limiters, RetryPolicy

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
        if acct.list_queues_rate is not None:
            per_account[(acct.id, "ListQueues")] = (acct.list_queues_rate, max(1, int(acct.list_queues_rate)))
    return Limiters(
        clock=clock,
        overrides={
            "GetMetricData": (a.get_metric_data_rate, a.get_metric_data_burst),
            "ListQueues": (a.list_queues_rate, max(1, int(a.list_queues_rate))),
        },
        account_overrides=per_account,
        headroom=a.rate_headroom,
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
                limiters=limiters or limiters_for(settings, clock or SystemClock()),
                clock=clock or SystemClock(),
            )
    finally:
        await pool.close()


def check_collection(
    settings: Settings, start: datetime, end: datetime, instances: Sequence[str], now: datetime,
    profile: str = DEFAULT_PROFILE,
) -> list[InstanceSettings]:
    """Refuse a collection that cannot be served, before any call or connection."""
    plan([], settings.profile(profile), start, end, now, profile)
    return select_instances(settings, instances)


def _discovering(settings: Settings) -> list[AccountSettings]:
    return [a for a in settings.accounts if a.instances is not None]


def select_instances(settings: Settings, instances: Sequence[str]) -> list[InstanceSettings]:
    """The configured [[instances]] to collect (``instances`` narrows them down)."""
    configured = settings.instances
    listed = {i for a in _discovering(settings) if isinstance(a.instances, list) for i in a.instances}
    if instances:
        known = {i.id for i in configured} | listed
        unknown = [i for i in instances if i not in known]
        if unknown and not any(a.instances == "discover" for a in _discovering(settings)):
            raise errors.ConfigError(f"instance {unknown[0]!r} is not in the config's [[instances]]")
        configured = [i for i in configured if i.id in set(instances)]
    if not configured and not _discovering(settings):
        raise errors.ConfigError("no [[instances]] or [[accounts]] with instances configured; nothing to collect")
    return configured


def _target(
    settings: Settings, instance_id: str, region: str, account: str | None, queues: tuple[str, ...] = (),
    aws_profile: str | None = None,
) -> Target:
    acct = settings.account(account) if account else None
    return Target(
        instance_id=instance_id,
        region=region,
        account=account or (f"profile:{aws_profile}" if aws_profile else "default"),
        queues=queues,
        aws_profile=aws_profile or (acct.aws_profile if acct else None),
        role_arn=acct.role_arn if acct else None,
        external_id=acct.external_id if acct else None,
        session_name=acct.session_name if acct else "connect-collector",
    )


async def _paged(rt: Runtime, target: Target, api: str, call: Any) -> list[Any]:
    """Page a listing call to its end through the account's limiter, with retries."""
    limiter = rt.limiters.get(target.account, target.region, api)
    policy = RetryPolicy(max_attempts=rt.settings.aws.max_attempts)
    rng = random.Random()
    out: list[Any] = []
    token: str | None = None
    while True:
        attempt = 0
        while True:
            attempt += 1
            async with limiter:
                try:
                    items, token = await call(target, token)
                    limiter.succeeded()
                    break
                except errors.Throttled as e:
                    limiter.throttled()
                    if attempt >= policy.max_attempts:
                        raise
                    failure: errors.ApiError = e
                except errors.TransientApiError as e:
                    if attempt >= policy.max_attempts:
                        raise
                    failure = e
            log.debug("listing_retry", api=api, account=target.account, error=str(failure))
            await rt.clock.sleep(policy.delay(attempt, rng))
        out.extend(items)
        if not token:
            return out


async def discover_queues(rt: Runtime, target: Target) -> list[QueueInfo]:
    """ListQueues (STANDARD) paged to the end, through the per-account limiter."""
    return await _paged(rt, target, "ListQueues", rt.source.list_queues)


@dataclass
class Resolution:
    targets: list[Target]
    failed_instances: list[tuple[str, str]]  # (instance id, reason): their slices fail
    failed_scopes: list[tuple[str, str]]  # ("account A/region", reason): nothing known to plan

    def planned(
        self, coll: CollectionSettings, start: datetime, end: datetime, now: datetime, profile: str
    ) -> tuple[list[SliceWork], list[tuple[str, str]]]:
        """The slices to collect, and the failures standing for the ones that cannot be."""
        works = plan(self.targets, coll, start, end, now, profile)
        lost = [
            (str(SliceKey(profile, iid, s, e)), reason)
            for iid, reason in self.failed_instances
            for s, e in slices(start, end, coll.granularity_seconds, now)
        ]
        return works, lost + list(self.failed_scopes)


def config_shards(settings: Settings) -> list[tuple[str, str]]:
    """Every (account, Region) the config can touch, known without calling AWS."""
    shards = {(_target(settings, i.id, i.region, i.account, aws_profile=i.aws_profile).account, i.region)
              for i in settings.instances}
    for a in _discovering(settings):
        assert a.id is not None
        shards |= {(a.id, r) for r in a.regions}
    return sorted(shards)


async def resolve(
    rt: Runtime, only: Sequence[str] = (), shards: dict[tuple[str, str], int] | None = None
) -> Resolution:
    """Every instance to collect, with its queues. Accounts with ``instances`` are
    discovered (ListInstances, ACTIVE only) per Region; a broken account, instance or
    queue listing fails only its own work, with the reason."""
    settings = rt.settings
    specs: dict[str, Target] = {}
    def mine(t: Target) -> Target | None:
        """With leases, only this replica's shards are touched, stamped with the lease."""
        if shards is None:
            return t
        gen = shards.get(t.limiter_key)
        return None if gen is None else dataclasses.replace(t, lease=gen)

    for inst in select_instances(settings, only):
        t0 = mine(_target(settings, inst.id, inst.region, inst.account, aws_profile=inst.aws_profile))
        if t0 is not None:
            specs[inst.id] = t0
    explicit_queues = {i.id: i.queues for i in settings.instances}
    failed_scopes: list[tuple[str, str]] = []

    async def discover(acct: AccountSettings, region: str) -> None:
        assert acct.id is not None
        probe = _target(settings, "", region, acct.id)
        if shards is not None and probe.limiter_key not in shards:
            return
        try:
            if acct.instances == "discover":
                found = await _paged(rt, probe, "ListInstances", rt.source.list_instances)
                ids = [(i.id, i.arn, i.alias) for i in found if i.status == "ACTIVE"]
            else:
                ids = [(i, None, None) for i in acct.instances or []]
        except errors.ApiError as e:
            log.error("account_failed", account=acct.id, region=region, reason=str(e))
            failed_scopes.append((f"account {acct.id}/{region}", str(e)))
            return
        for iid, arn, alias in ids:
            if only and iid not in only:
                continue
            await rt.store.save_instance(iid, region, acct.id, arn, alias)
            t1 = mine(_target(settings, iid, region, acct.id))
            if t1 is not None:
                specs.setdefault(iid, t1)

    async with anyio.create_task_group() as tg:
        for acct in _discovering(settings):
            for region in acct.regions:
                tg.start_soon(discover, acct, region)

    resolved: dict[str, Target | str] = {}

    async def queues_of(t: Target) -> None:
        await rt.store.instance_ref(t.instance_id, t.region, t.account)
        listed = explicit_queues.get(t.instance_id, "all")
        if listed == "all":
            try:
                found = await discover_queues(rt, t)
            except errors.ApiError as e:
                log.error("instance_failed", instance=t.instance_id, reason=str(e))
                resolved[t.instance_id] = f"queue discovery failed: {e}"
                return
            await rt.store.save_queues(t.instance_id, t.region, t.account, found)
            queues = tuple(q.id for q in found)
            if not queues:
                resolved[t.instance_id] = "instance has no STANDARD queues"
                return
        else:
            queues = tuple(dict.fromkeys(q.rsplit("/", 1)[-1] for q in listed))
        resolved[t.instance_id] = dataclasses.replace(t, queues=queues)

    # Queue discovery runs for every instance at once; each account's limiter paces it.
    async with anyio.create_task_group() as tg:
        for t in specs.values():
            tg.start_soon(queues_of, t)
    order = list(specs)
    return Resolution(
        targets=[x for i in order if isinstance(x := resolved[i], Target)],
        failed_instances=[(i, y) for i in order if isinstance(y := resolved[i], str)],
        failed_scopes=sorted(failed_scopes),
    )


async def resolve_targets(
    rt: Runtime, only: Sequence[str] = (), shards: dict[tuple[str, str], int] | None = None
) -> tuple[list[Target], list[tuple[str, str]]]:
    res = await resolve(rt, only, shards)
    return res.targets, res.failed_instances + res.failed_scopes


async def execute(
    rt: Runtime,
    works: Sequence[SliceWork],
    *,
    run_id: int,
    lost: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    kind: str = "oneoff",
    finish: Any = None,
) -> RunSummary:
    """Collect planned slices under a run row; the run always ends with a status.

    ``finish(status, summary)`` replaces the default end of the run (a run part ends its
    part and settles the run only when every part is done)."""
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
            if finish is not None:
                await finish(status, summary)
            else:
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
    res = await resolve(rt, instances)
    targets = res.targets
    works, lost = res.planned(rt.settings.profile(profile), start, end, rt.clock.now(), profile)
    names = [t.instance_id for t in targets] + [i for i, _r in res.failed_instances]
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


def shards_of_request(settings: Settings, instances: Sequence[str]) -> list[tuple[str, str]]:
    """The (account, Region) shards a one-off collection touches."""
    chosen = set(instances)
    shards = {
        (_target(settings, i.id, i.region, i.account, aws_profile=i.aws_profile).account, i.region)
        for i in settings.instances
        if not chosen or i.id in chosen
    }
    for a in _discovering(settings):
        assert a.id is not None
        listed = a.instances if isinstance(a.instances, list) else None
        if not chosen or listed is None or chosen & set(listed):
            shards |= {(a.id, r) for r in a.regions}
    return sorted(shards)


async def collect_part(rt: Runtime, part: dict[str, Any], generation: int, stop: anyio.Event | None) -> str | None:
    """One (account, Region) part of a one-off run, on the replica holding that shard."""
    shard = (part["account"], part["region"])
    profile = part["profile"]
    run_id = part["id"]
    try:
        res = await resolve(rt, part["instances"] or (), shards={shard: generation})
        works, lost = res.planned(
            rt.settings.profile(profile), part["range_start"], part["range_end"], rt.clock.now(), profile
        )
        await rt.store.part_started(run_id, len(works) + len(lost))
    except errors.CollectorError as e:
        return await rt.store.finish_part(run_id, *shard, "failed", 0, 0, 0, 0,
                                          [{"slice": f"account {shard[0]}/{shard[1]}", "reason": str(e)}])
    final: list[str | None] = [None]

    async def finish(st: str, summary: RunSummary) -> None:
        final[0] = await rt.store.finish_part(
            run_id, *shard, "done" if st in ("succeeded", "partial") else "failed",
            summary.slices_failed, summary.requests, summary.retries, summary.throttles,
            [{"slice": k, "reason": r} for k, r in summary.failures],
        )

    await execute(rt, works, run_id=run_id, lost=lost, stop=stop, kind="oneoff", finish=finish)
    return final[0]
