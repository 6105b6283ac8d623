"""``collector serve``: the scheduler, one-off runs and the HTTP API in one event loop.

Shutdown is staged: the stop event stops new work, in-flight slices get the
grace period, the writer's flush is shielded, unfinished runs end as
``interrupted``; the next start resumes from the watermarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog
import uvicorn

from collector import errors
from collector.api import CollectionRequest, create_app
from collector.config import Settings
from collector.leases import LeaseManager
from collector.model import RunSummary, SliceWork, Target
from collector.ports import Clock, ConnectSource
from collector.ratelimit import Limiters
from collector.scheduler import ProfileSpec, ScheduleOptions, run_scheduler
from collector.wiring import (
    Runtime,
    check_collection,
    collect,
    collect_part,
    config_shards,
    execute,
    resolve_targets,
    runtime,
    shards_of_request,
)

log = structlog.get_logger("collector.service")


def schedule_options(settings: Settings) -> ScheduleOptions:
    s = settings.scheduler
    return ScheduleOptions(
        settle=s.seconds("settle"),
        revisits=tuple(sorted(_durations(s.revisits))),
        initial_backfill=s.seconds("initial_backfill"),
        catchup_batch=s.catchup_batch,
        lookback_margin=s.seconds("lookback_margin"),
        retry_after=s.seconds("retry_after"),
    )


def _durations(values: Sequence[str]) -> list[int]:
    from collector.config import parse_duration

    return [parse_duration(v) for v in values]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the service owns signals, not uvicorn
        yield


@dataclass
class _Targets:
    rt: Runtime
    ttl: float
    leases: LeaseManager | None = None
    cached: list[Target] | None = None
    at: float = 0.0
    owned: dict[tuple[str, str], int] | None = None

    async def __call__(self) -> Sequence[Target]:
        now = self.rt.clock.monotonic()
        owned = dict(self.leases.owned) if self.leases is not None else None
        if self.cached is None or now - self.at >= self.ttl or owned != self.owned:
            self.owned = owned
            targets, failed = await resolve_targets(self.rt, shards=owned)
            for iid, reason in failed:
                log.error("instance_unavailable", instance=iid, reason=reason)
            if self.cached is not None:  # keep the last known queues of an instance that failed now
                have = {t.instance_id for t in targets}
                targets += [t for t in self.cached if t.instance_id not in have and t.instance_id in dict(failed)]
            self.cached, self.at = targets, now
        return self.cached


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
    stop = stop or anyio.Event()
    async with runtime(settings, source=source, clock=clock, limiters=limiters) as rt:
        stale = await rt.store.interrupt_stale_runs()
        for r in stale:
            log.warning("run_interrupted_by_restart", run_id=r["id"])
        submit_send, submit_recv = anyio.create_memory_object_stream[tuple[int, CollectionRequest]](100)
        work_done = anyio.Event()

        def validate(body: CollectionRequest) -> None:
            check_collection(settings, body.start, body.end, body.instances or (), rt.clock.now(), body.profile)

        async def submit(body: CollectionRequest) -> int:
            run_id = await rt.store.queue_run("api", body.profile, body.start, body.end, body.instances or [])
            if leases is not None:  # each shard's part runs on the replica holding its lease
                await rt.store.add_run_parts(run_id, shards_of_request(settings, body.instances or ()))
                return run_id
            try:
                submit_send.send_nowait((run_id, body))
            except anyio.WouldBlock:
                await rt.store.finish_run(run_id, "failed", 0, 0, 0, 0, [{"reason": "too many queued runs"}])
            return run_id

        for r in stale:  # resume one-off runs a crash or kill cut short (upserts make this safe)
            if r["requested_by"] != "scheduler" and r["range_start"] is not None:
                body = CollectionRequest(start=r["range_start"], end=r["range_end"],
                                         instances=list(r["instances"]) or None, profile=r["profile"])
                try:
                    validate(body)
                except errors.BadInput as e:
                    log.warning("run_not_resumed", run_id=r["id"], reason=str(e))
                    continue
                new_id = await rt.store.queue_run("resume", body.profile, body.start, body.end, body.instances or [])
                await rt.store.set_resumed_from(new_id, r["id"])
                submit_send.send_nowait((new_id, body))

        leases: LeaseManager | None = None
        if settings.cluster.enabled:
            import os
            import socket

            replica = settings.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"
            rt.store.replica = replica
            leases = LeaseManager(rt.store, replica, settings.cluster.lease_ttl, rt.clock,
                                  api_url=f"http://{settings.api.host}:{settings.api.port}")
            await leases.tick(config_shards(settings), claim=False)
            log.info("replica_started", replica=replica)
        targets = _Targets(rt, float(settings.scheduler.seconds("discovery_ttl")), leases)
        profiles = [ProfileSpec(name, coll) for name, coll in settings.all_profiles()]

        async def run_round(works: list[SliceWork]) -> RunSummary:
            starts = [w.key.start for w in works]
            ends = [w.key.end for w in works]
            names = sorted({w.key.profile for w in works})
            run_id = await rt.store.create_run(
                "scheduler", names[0] if len(names) == 1 else ",".join(names), min(starts), max(ends),
                sorted({w.key.instance_id for w in works}), len(works),
            )
            return await execute(rt, works, run_id=run_id, stop=stop, kind="scheduled")

        async def scheduler_task() -> None:
            if not settings.scheduler.enabled:
                return
            if not settings.instances:
                log.warning("no_instances_configured")
                return
            opts = schedule_options(settings)
            if leases is not None:  # wake often enough to pick up shards as leases move
                opts = dataclasses.replace(opts, max_sleep=max(1, int(settings.cluster.lease_ttl / 3)))
            try:
                await run_scheduler(
                    store=rt.store, targets=targets, profiles=profiles, opts=opts,
                    clock=rt.clock, run_round=run_round, stop=stop, until=until,
                )
            finally:
                if until is not None:  # a bounded run (tests, one-shot catch-up) ends the service
                    stop.set()

        idle: list[anyio.CancelScope] = []  # set while the one-off executor waits for work

        async def oneoff_task() -> None:
            async with submit_recv:
                while not stop.is_set():
                    with anyio.CancelScope() as scope:
                        idle.append(scope)
                        try:
                            run_id, body = await submit_recv.receive()
                        except anyio.EndOfStream:
                            return
                        finally:
                            idle.remove(scope)
                    if scope.cancelled_caught:
                        return
                    try:
                        await collect(rt, body.start, body.end, instances=body.instances or (),
                                      requested_by="api", profile=body.profile, stop=stop, run_id=run_id)
                    except errors.CollectorError as e:
                        log.error("run_failed", run_id=run_id, reason=str(e))
                        await rt.store.finish_run(run_id, "failed", 0, 0, 0, 0, [{"reason": str(e)}])
                    if on_run_finished:
                        on_run_finished(run_id)

        async def parts_task() -> None:
            """With leases: execute the parts of one-off runs whose shards this replica holds."""
            if leases is None:
                return
            from collector.scheduler import sleep_or_stop

            while not stop.is_set():
                part = await rt.store.claim_part(leases.replica, list(leases.owned), leases.ttl)
                if part is None:
                    await sleep_or_stop(rt.clock, leases.ttl / 3, stop)
                    continue
                gen = leases.owned.get((part["account"], part["region"]))
                if gen is None:
                    continue  # the lease moved between claim and now; the part is requeued
                final = await collect_part(rt, part, gen, stop)
                if final is not None and on_run_finished:
                    on_run_finished(part["id"])

        async def stop_idle() -> None:
            await stop.wait()
            for scope in list(idle):
                scope.cancel()

        server: _Server | None = None
        if with_api:
            app = create_app(
                token=settings.api.token, validate=validate, submit=submit,
                get_run=rt.store.get_run, list_runs=rt.store.list_runs, ready=rt.store.ping,
                cluster=rt.store.cluster_state,
            )
            server = _Server(uvicorn.Config(app, host=settings.api.host, port=settings.api.port,
                                            log_level="warning", access_log=False, lifespan="off"))

        async def signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for sig in received:
                    log.info("shutdown_requested", signal=signal.Signals(sig).name)
                    stop.set()
                    return

        async def retention_task() -> None:
            days = settings.storage.retention_days
            if days is None:
                return
            from collector.config import parse_duration
            from collector.scheduler import sleep_or_stop

            while not stop.is_set():
                cutoff = rt.clock.now() - timedelta(days=days)
                dropped = await rt.store.prune(cutoff)
                if dropped:
                    log.info("partitions_dropped", partitions=dropped, cutoff=cutoff.isoformat())
                await sleep_or_stop(rt.clock, parse_duration(settings.storage.prune_every), stop)

        async def lease_task() -> None:
            if leases is None:
                return

            async def shards() -> list[tuple[str, str]]:
                return config_shards(settings)

            await leases.run(shards, stop)

        async def work() -> None:
            try:
                async with anyio.create_task_group() as wtg:
                    wtg.start_soon(lease_task)
                    wtg.start_soon(parts_task)
                    wtg.start_soon(scheduler_task)
                    wtg.start_soon(oneoff_task)
                    wtg.start_soon(stop_idle)
                    wtg.start_soon(retention_task)
            finally:
                work_done.set()

        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(signals)
            tg.start_soon(work)
            if server is not None:
                tg.start_soon(server.serve)
                # uvicorn exposes only a flag for "listening"; poll it briefly.
                while not server.started and not stop.is_set():  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                url = f"http://{settings.api.host}:{settings.api.port}"
                log.info("api_listening", url=url)
            else:
                url = None
            if on_ready:
                on_ready(url)
            with anyio.CancelScope() as waiting:

                async def watch_done() -> None:
                    await work_done.wait()
                    waiting.cancel()

                tg.start_soon(watch_done)
                await stop.wait()
            if not work_done.is_set():
                stop.set()
            with anyio.move_on_after(settings.scheduler.grace_period):
                await work_done.wait()
            if server is not None:
                server.should_exit = True
            tg.cancel_scope.cancel()
        if leases is not None:  # hand the shards over now rather than after the TTL
            with anyio.CancelScope(shield=True):
                await leases.release_all()
        log.info("service_stopped")
