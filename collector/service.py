"""``collector serve``: the scheduler, one-off runs and the HTTP API in one event loop.

:class:`Service` has one method per concern; :meth:`Service.run` is the table of
contents. Every run, resumed ones included, enters through :meth:`Service.submit`:
on a single node it is queued in the database for the one-off loop; in a cluster it
is split into (account, Region) parts that the lease holders execute.

Shutdown is staged: the stop event stops new work, in-flight slices get the
grace period, the writer's flush is shielded, unfinished runs end as
``interrupted`` (a cluster's unfinished parts go back to the queue); the next start
resumes from the watermarks.

Every process is a replica with an id (``cluster.replica_id``, default host name and
process id) that heartbeats in ``replicas``, also on a single node; runs record the
replica that executes them (``collection_runs.owner``). A replica takes over only its
own unfinished runs (a restart under the same id) and those of replicas that are dead by
the heartbeat table (no beat for ``cluster.lease_ttl``), at start-up and then every third
of the TTL. A start binds the API port before it touches any run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog
import uvicorn
from anyio.abc import TaskGroup

from collector import errors
from collector.clock import sleep_or_stop
from collector.config import Settings
from collector.durations import parse_duration
from collector.fleet import Targets, discovering, shards
from collector.http_api import CollectionRequest, create_app
from collector.leases import LeaseManager
from collector.model import PartRecord, RunRecord, RunSummary, ScheduleOptions, Shard, SliceKey
from collector.observability import DB_METER
from collector.ports import FetchUnit, MetricApi
from collector.retry import OUTLAST, retry
from collector.runs import (
    check_collection,
    clip_start,
    collect,
    collect_part,
    execute,
    failed_summary,
    snapshots,
)
from collector.runtime import Runtime
from collector.scheduler import run_scheduler

log = structlog.get_logger("collector.service")

T = TypeVar("T")

MAX_QUEUED_RUNS = 100  # one-off runs waiting (single node or cluster); more are refused


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the service owns signals, not uvicorn
        yield


def bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts (uvicorn serves it)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError as e:
        raise errors.ConfigError(f"API host {host!r} does not resolve: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise errors.PortInUse(
            f"API {host}:{port} ({e.strerror}; is another collector running?); "
            "pick another port with --port N or COLLECTOR_API__PORT=N"
        ) from None
    return sock


class Service:
    """One collector process: resume, submit, scheduler, one-off, parts, leases, retention."""

    def __init__(
        self,
        rt: Runtime,
        schedule: ScheduleOptions,
        *,
        stop: anyio.Event | None = None,
        until: datetime | None = None,
        on_run_finished: Callable[[int], None] | None = None,
    ) -> None:
        self.rt = rt
        self.schedule = schedule
        self.settings: Settings = rt.settings
        self.stop = stop or anyio.Event()
        self.until = until
        self.on_run_finished = on_run_finished
        self.leases: LeaseManager | None = None
        # A wake-up for the one-off loop; the queue itself is the database (size 1: a
        # pending wake-up is enough, and submit never blocks on it).
        self._wake_send, self._wake_recv = anyio.create_memory_object_stream[None](1)
        self._work_done = anyio.Event()
        self._parts_changed = anyio.Event()  # a part ended here: claim the next at once
        self.url: str | None = None
        self._sock: socket.socket | None = None
        self.replica = self.settings.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.ttl = self.settings.cluster.lease_ttl
        rt.store.replica = self.replica  # owns the runs it starts, fences its writes
        self._rng = random.Random()
        self._queue_slots = anyio.Lock()
        self.targets: Targets | None = None  # the scheduler's fleet, once it runs
        self._nothing_configured = False

    # -- the table of contents ------------------------------------------------------------
    async def run(
        self, *, with_api: bool = True, handle_signals: bool = True,
        on_ready: Callable[[str | None], None] | None = None,
    ) -> None:
        # The port first: a start that cannot bind it changes nothing in the database.
        with self.listening(with_api) as server:
            await self.join_cluster()
            await self.resume(await self.rt.store.adopt_runs(self.replica, self.ttl, True))
            async with self._wake_send, self._wake_recv, anyio.create_task_group() as tg:
                if handle_signals:
                    tg.start_soon(self.signals)
                tg.start_soon(self.work)
                if server is not None:
                    await self.serve_api(tg, server)
                if on_ready:
                    on_ready(self.url)
                await self.wait_for_stop()
                await self.shutdown(tg, server)
            await self.leave_cluster()
        log.info("service_stopped")

    async def work(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.lease_loop)
                tg.start_soon(self.parts_loop)
                tg.start_soon(self.scheduler_loop)
                tg.start_soon(self.oneoff_loop)
                tg.start_soon(self.retention_loop)
                tg.start_soon(self.adopt_loop)
                tg.start_soon(self._wake_on_stop)
        finally:
            self._work_done.set()

    # -- runs in --------------------------------------------------------------------------
    def validate(self, body: CollectionRequest) -> None:
        check_collection(self.settings, self.rt.apis, body.start, body.end, body.instances or (), self.rt.clock.now(),
                         body.profile)

    async def submit(self, body: CollectionRequest, resumed_from: int | None = None) -> int:
        """The one way a one-off run starts: queued, then split into parts (cluster) or
        left for the one-off loop (single node). A full queue raises :class:`errors.QueueFull`
        (the API answers 429 with Retry-After) and records nothing; resumed runs always fit."""
        store = self.rt.store
        by = "api" if resumed_from is None else "resume"
        async with self._queue_slots:  # count and queue as one step: the cap holds under races
            if resumed_from is None and await store.count_queued_runs() >= MAX_QUEUED_RUNS:
                raise errors.QueueFull(f"{MAX_QUEUED_RUNS} one-off collections are queued", retry_after=30)
            run_id = await store.queue_run(by, body.profile, body.start, body.end, body.instances or [])
        if resumed_from is not None:
            await store.set_resumed_from(run_id, resumed_from)
        if self.leases is not None:  # each shard's part runs on the replica holding its lease
            await store.add_run_parts(run_id, shards(self.settings, body.instances or ()))
        else:
            self._wake()
        return run_id

    async def resume(self, stale: list[RunRecord]) -> None:
        """Resume the one-off runs a crash or kill cut short (upserts make this safe)."""
        for r in stale:
            log.warning("run_interrupted_by_restart", run_id=r.id, owner=r.owner)
            if r.requested_by == "scheduler" or r.range_start is None or r.range_end is None:
                continue  # the scheduler picks its slices up from the watermarks
            body = CollectionRequest(start=r.range_start, end=r.range_end,
                                     instances=list(r.instances) or None, profile=r.profile)
            try:  # a start that aged out since is clipped when it runs (the rest: gaps)
                if body.profile in self.rt.apis:
                    clipped = clip_start(self.rt.api(body.profile), body.start, body.end, self.rt.clock.now(),
                                         self.settings.scheduler.seconds("lookback_margin"))
                    if clipped < body.end:
                        self.validate(body.model_copy(update={"start": clipped}))
                else:
                    self.validate(body)
            except errors.BadInput as e:
                log.warning("run_not_resumed", run_id=r.id, reason=str(e))
                continue
            new_id = await self.submit(body, resumed_from=r.id)
            log.info("run_resumed", run_id=new_id, resumed_from=r.id)

    def _wake(self) -> None:
        with contextlib.suppress(anyio.WouldBlock):
            self._wake_send.send_nowait(None)

    async def _wake_on_stop(self) -> None:
        await self.stop.wait()
        self._wake()

    async def outlast(self, call: Callable[[], Awaitable[T]], operation: str) -> T:
        """``call()``, again after a capped backoff while the database is away (StorageError);
        never given up while the service runs (shutdown cancels the wait)."""
        return await retry(call, operation=operation, policy=OUTLAST, clock=self.rt.clock, rng=self._rng,
                           meter=DB_METER)

    # -- the loops ------------------------------------------------------------------------
    async def oneoff_loop(self) -> None:
        """Single node: execute queued one-off runs, oldest first, one at a time."""
        if self.leases is not None:
            return  # in a cluster, parts_loop does this work
        while not self.stop.is_set():
            run = await self.outlast(self.rt.store.claim_queued_run, "claim_queued_run")
            if run is None:
                await self._wake_recv.receive()
                continue
            await self.run_oneoff(run)

    async def run_oneoff(self, run: RunRecord) -> None:
        assert run.range_start is not None and run.range_end is not None
        start, end = run.range_start, run.range_end

        async def attempt() -> object:  # again while the database is away: upserts are idempotent
            return await collect(self.rt, start, end, instances=run.instances, requested_by="api",
                                 profile=run.profile, stop=self.stop, run_id=run.id, clip=True)

        try:
            await self.outlast(attempt, "oneoff_run")
        except errors.CollectorError as e:
            log.error("run_failed", run_id=run.id, reason=str(e))
            await self.outlast(functools.partial(self.rt.store.finish_run, run.id, "failed", failed_summary(str(e))),
                               "finish_run")
        if self.on_run_finished:
            self.on_run_finished(run.id)

    async def scheduler_loop(self) -> None:
        if not self.settings.scheduler.enabled:
            return
        if not self.settings.instances and not discovering(self.settings):
            log.warning("no_instances_configured")
            self._nothing_configured = True
            return
        opts = self.schedule
        ttl = self.settings.scheduler.seconds("discovery_ttl")
        # wake at least every discovery_ttl, so new instances are found and removed ones dropped
        opts = dataclasses.replace(opts, max_sleep=max(1, min(opts.max_sleep, ttl)))
        leases = self.leases
        if leases is not None:  # wake often enough to pick up shards as leases move
            opts = dataclasses.replace(opts, max_sleep=max(1, int(self.settings.cluster.lease_ttl / 3)))
        targets = self.targets = Targets(
            self.rt, float(ttl), lambda: dict(leases.owned) if leases is not None else None,
        )
        # One scheduler loop per kind of profile (history, live): a long catch-up of one
        # never holds up the rounds of the other.
        loops: dict[str, list[MetricApi]] = {}
        for api in self.rt.apis.values():
            loops.setdefault(api.schedule(opts).loop, []).append(api)
        try:
            async with anyio.create_task_group() as tg:
                targets.spawn = tg.start_soon  # the live loop's rediscoveries run beside it
                for kind, apis in loops.items():
                    lopts = apis[0].schedule(opts)
                    tg.start_soon(functools.partial(
                        run_scheduler, store=self.rt.store, apis=apis, opts=lopts,
                        targets=targets if kind != "live" else functools.partial(targets, wait=False),
                        clock=self.rt.clock, run_round=self.run_round if lopts.runs else self.snapshot_round,
                        stop=self.stop, until=self.until,
                    ))
        finally:
            if self.until is not None:  # a bounded run (tests, one-shot catch-up) ends the service
                self.stop.set()

    async def run_round(self, units: list[FetchUnit], lost: list[tuple[SliceKey, str]]) -> RunSummary:
        """One scheduled run: ``units`` are collected, ``lost`` (slices of instances that cannot
        be resolved or planned) count as failed with their reasons."""
        keys = [k for u in units for k in u.slice_keys] + [k for k, _r in lost]
        names = sorted({k.profile for k in keys})
        run_id = await self.rt.store.create_run(
            "scheduler", names[0] if len(names) == 1 else ",".join(names),
            min(k.start for k in keys), max(k.end for k in keys),
            sorted({k.instance_id for k in keys}), len(keys),
        )
        guard = self.leases.guard if self.leases is not None else None
        return await execute(self.rt, units, run_id=run_id, lost=[(str(k), r) for k, r in lost], stop=self.stop,
                             kind="scheduled", guard=guard)

    async def snapshot_round(self, units: list[FetchUnit], lost: list[tuple[SliceKey, str]]) -> RunSummary:
        """One live round: snapshots, stored without a run record."""
        guard = self.leases.guard if self.leases is not None else None
        return await snapshots(self.rt, units, [(str(k), r) for k, r in lost], stop=self.stop, guard=guard)

    async def ready(self) -> None:
        """``/readyz``: the database answers with the current schema, and (single node, with
        the scheduler) the fleet has at least one instance that can be collected."""
        await self.rt.store.ping()
        if self.leases is not None:
            if self.leases.unserved:
                names = ", ".join(f"{a}/{r}" for a, r in self.leases.unserved)
                raise errors.ShardsUnserved(f"no live replica's config can serve {names}")
            return
        if not self.settings.scheduler.enabled:
            return
        targets = self.targets
        if self._nothing_configured:
            raise errors.NothingToCollect("no [[instances]], and no [[accounts]] with instances, in the config")
        if targets is None or targets.collectable is None:
            raise errors.NothingToCollect("the fleet has not been resolved yet")
        if not targets.collectable:
            why = "; ".join(f"{w}: {r}" for w, r in targets.problems[:5]) or "no instance found"
            raise errors.NothingToCollect(why)

    async def parts_loop(self) -> None:
        """With leases: execute the parts of one-off runs whose shards this replica holds,
        concurrently, one part per shard at a time (each paced by its shard's limiter)."""
        leases = self.leases
        if leases is None:
            return
        busy: set[Shard] = set()
        async with anyio.create_task_group() as tg:
            while not self.stop.is_set():
                free = [s for s in leases.owned if s not in busy]
                try:
                    part = await self.rt.store.claim_part(leases.replica, free, leases.ttl) if free else None
                except errors.StorageError as e:  # the database may be briefly away; keep trying
                    log.error("claim_part_failed", error=str(e))
                    part = None
                if part is None:
                    await self._nap(leases.ttl / 3, self._parts_changed)
                    continue
                gen = leases.owned.get(part.shard)
                if gen is None:  # the lease moved between claim and now: back to the queue
                    await self.outlast(functools.partial(self.rt.store.requeue_part, part.run.id, part.shard,
                                                         leases.replica, RunSummary()), "requeue_part")
                    continue
                busy.add(part.shard)
                tg.start_soon(self._run_part, part, gen, busy)

    async def _run_part(self, part: PartRecord, gen: int, busy: set[Shard]) -> None:
        assert self.leases is not None
        try:
            final = await collect_part(self.rt, part, gen, self.stop, self.leases.guard)
        finally:
            busy.discard(part.shard)
            self._parts_changed.set()
            self._parts_changed = anyio.Event()
        if final is not None and self.on_run_finished:
            self.on_run_finished(part.run.id)

    async def _nap(self, seconds: float, wake: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:

            async def woken() -> None:
                await wake.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(woken)
            await sleep_or_stop(self.rt.clock, seconds, self.stop)
            tg.cancel_scope.cancel()

    async def adopt_loop(self) -> None:
        """Every third of the TTL: a single node heartbeats (a cluster's lease loop does),
        and the unfinished runs of replicas that died since are taken over."""
        store = self.rt.store
        while not self.stop.is_set():
            with anyio.move_on_after(self.ttl / 3):  # wall time, as the heartbeats' now()
                await self.stop.wait()
                return
            try:
                if self.leases is None:
                    await store.heartbeat(self.replica, self.url)
                await self.resume(await store.adopt_runs(self.replica, self.ttl, False))
            except errors.StorageError as e:  # the database may be briefly away; keep trying
                log.error("adopt_failed", error=str(e))

    async def _beat_until(self, done: anyio.Event) -> None:
        """A single node's heartbeat every third of the TTL until ``done`` (its shutdown)."""
        while not done.is_set():
            with anyio.move_on_after(self.ttl / 3):  # wall time, as the heartbeats' now()
                await done.wait()
                return
            try:
                await self.rt.store.heartbeat(self.replica, self.url)
            except errors.StorageError as e:  # the database may be briefly away; keep trying
                log.error("heartbeat_failed", error=str(e))

    async def retention_loop(self) -> None:
        days = self.settings.storage.retention_days
        # the real-time history has its own retention, kept only where live profiles write it
        live = any(api.schedule(self.schedule).loop == "live" for api in self.rt.apis.values())
        live_days = self.settings.storage.realtime_retention_days if live else None
        if days is None and live_days is None:
            return
        while not self.stop.is_set():
            now = self.rt.clock.now()
            cutoff = None if days is None else now - timedelta(days=days)
            live_cutoff = None if live_days is None else now - timedelta(days=live_days)
            dropped = await self.outlast(functools.partial(self.rt.store.prune, cutoff, live_cutoff), "prune")
            if dropped:
                log.info("partitions_dropped", partitions=dropped, cutoff=cutoff and cutoff.isoformat(),
                         live_cutoff=live_cutoff and live_cutoff.isoformat())
            await sleep_or_stop(self.rt.clock, parse_duration(self.settings.storage.prune_every), self.stop)

    # -- leases ---------------------------------------------------------------------------
    async def join_cluster(self) -> None:
        """With ``[cluster]``: announce this replica (claims come with the first lease tick)."""
        cluster = self.settings.cluster
        replica = self.replica
        if not cluster.enabled:  # a single node heartbeats too: its runs' owner is known alive
            await self.rt.store.heartbeat(replica, None)
            return
        self.leases = LeaseManager(self.rt.store, replica, cluster.lease_ttl, self.rt.clock,
                                   api_url=f"http://{self.settings.api.host}:{self.settings.api.port}")
        await self.leases.tick(shards(self.settings), claim=False)
        log.info("replica_started", replica=replica)

    async def lease_loop(self) -> None:
        if self.leases is None:
            return

        async def all_shards() -> list[tuple[str, str]]:
            return shards(self.settings)

        await self.leases.run(all_shards, self.stop)

    async def leave_cluster(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.leases is not None:  # hand the shards over now rather than after the TTL
                await self.leases.release_all()
            else:  # its interrupted runs are resumed by the next start (or a live peer)
                try:
                    await self.rt.store.remove_replica(self.replica)
                except errors.StorageError as e:  # then it counts as dead after the TTL
                    log.error("replica_not_removed", error=str(e))

    # -- the HTTP API -----------------------------------------------------------------------
    @contextlib.contextmanager
    def listening(self, with_api: bool) -> Iterator[_Server | None]:
        """The API server on a socket bound now (a busy port raises :class:`errors.PortInUse`)."""
        if not with_api:
            yield None
            return
        self._sock = bind(self.settings.api.host, self.settings.api.port)
        with self._sock:
            server = self.api_server()
            try:
                yield server
            finally:  # uvicorn may have been cancelled mid-serve: unregister its listeners
                for listener in getattr(server, "servers", []):  # from the loop before the close
                    listener.close()

    def api_server(self) -> _Server:
        store = self.rt.store

        async def get_run(run_id: int) -> dict[str, Any] | None:
            run = await store.get_run(run_id)
            return run.as_dict() if run else None

        async def list_runs(status: str | None, before: int | None, limit: int) -> list[dict[str, Any]]:
            return [r.as_dict() for r in await store.list_runs(status, before, limit)]

        app = create_app(
            token=self.settings.api.token, validate=self.validate, submit=self.submit,
            get_run=get_run, list_runs=list_runs, ready=self.ready,
            cluster=functools.partial(store.cluster_state, float(self.settings.cluster.lease_ttl)),
            wallboard=store.wallboard, live_changed_at=store.live_changed_at,
            stopping=self.stop,
        )
        api = self.settings.api
        return _Server(uvicorn.Config(app, host=api.host, port=api.port, log_level="warning",
                                      access_log=False, lifespan="off"))

    async def serve_api(self, tg: TaskGroup, server: _Server) -> None:
        assert self._sock is not None
        tg.start_soon(functools.partial(server.serve, sockets=[self._sock]))
        # uvicorn exposes only a flag for "listening"; poll it briefly.
        while not server.started and not self.stop.is_set():  # noqa: ASYNC110
            await anyio.sleep(0.02)
        port = self._sock.getsockname()[1]
        self.url = f"http://{self.settings.api.host}:{port}"
        log.info("api_listening", url=self.url)

    # -- stopping ---------------------------------------------------------------------------
    async def signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for sig in received:
                log.info("shutdown_requested", signal=signal.Signals(sig).name)
                self.stop.set()
                return

    async def wait_for_stop(self) -> None:
        """Until asked to stop, or until the work ended by itself (a bounded run)."""
        async with anyio.create_task_group() as tg:

            async def done() -> None:
                await self._work_done.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(done)
            await self.stop.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self, tg: TaskGroup, server: _Server | None) -> None:
        """Stop new work, give in-flight work the grace period, then cancel the rest."""
        self.stop.set()
        with anyio.move_on_after(self.settings.scheduler.grace_period):
            async with anyio.create_task_group() as holding:
                # the grace period may outlast the TTL: keep the leases (and the heartbeat, by
                # which a peer or a successor would take the runs in flight here for dead's)
                if self.leases is not None:
                    holding.start_soon(self.leases.hold, self._work_done)
                else:
                    holding.start_soon(self._beat_until, self._work_done)
                await self._work_done.wait()
        if server is not None:
            server.should_exit = True
        tg.cancel_scope.cancel()
