"""Scale-out: replicas share the fleet through Postgres leases on (account, Region).

The rate-limit scope is the unit of ownership, so exactly one replica spends an
account's quota at a time. Each replica heartbeats, renews its leases, claims free
or expired ones up to a fair share (``ceil(shards / live replicas)``) and hands back
extras, so a new replica gets its share and a dead one's shards are taken over
within the lease TTL. Every claim raises the shard's generation: the fencing token
that writes carry (see :meth:`collector.adapters.postgres.PgStore.write`). A shard handed
back is first taken out of this replica's work: its in-flight fetches are cancelled and
what they completed is written (``guard``), so the new owner's fence refuses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from collector.clock import sleep_or_stop
from collector.errors import StorageError
from collector.guard import ShardGuard
from collector.model import Shard
from collector.observability import LEASES_HELD, SHARDS_UNSERVED
from collector.ports import Clock, LeaseStore

log = structlog.get_logger("collector.leases")


@dataclass
class LeaseManager:
    store: LeaseStore
    replica: str
    ttl: float
    clock: Clock
    api_url: str | None = None
    owned: dict[Shard, int] = field(default_factory=dict)  # shard -> generation
    changed: anyio.Event = field(default_factory=anyio.Event)
    guard: ShardGuard = field(default_factory=ShardGuard)
    unserved: list[Shard] = field(default_factory=list)  # shards no live replica can serve

    async def tick(self, shards: Sequence[Shard], claim: bool = True) -> None:
        """``shards``: what this replica's config can serve. It claims only those: up to a
        fair share, and besides every free one no other live replica can serve (a rolling
        deploy that adds an account); it hands back only shards another live replica can serve."""
        await self.store.heartbeat(self.replica, self.api_url, shards)
        await self.store.ensure_shards(shards)
        servers = await self.store.shard_servers(self.ttl)
        unserved = sorted(s for s, live in servers.items() if not live)
        if set(unserved) - set(self.unserved):
            log.error("shards_unserved", shards=[f"{a}/{r}" for a, r in unserved])
        self.unserved = unserved
        SHARDS_UNSERVED.set(len(unserved))
        if not claim:  # the first beat only announces this replica, so peers starting with
            return  # it are counted before anyone claims a share
        before = dict(self.owned)
        self.owned = await self.store.renew_leases(self.replica, self.ttl)
        for lost in before.keys() - self.owned.keys():
            log.warning("lease_lost", shard=f"{lost[0]}/{lost[1]}")
        self.guard.revoke(before.keys() - self.owned.keys())  # its writes would be fenced: stop
        only_mine = {s for s in shards if servers.get(s, frozenset()) <= {self.replica}}
        live = max(1, await self.store.live_replicas(self.ttl))
        share = math.ceil(len(shards) / live)
        got: dict[Shard, int] = {}
        if alone := sorted(only_mine - self.owned.keys()):
            got |= await self.store.claim_leases(self.replica, self.ttl, len(alone), alone)
        if len(self.owned) + len(got) < share:
            got |= await self.store.claim_leases(self.replica, self.ttl, share - len(self.owned) - len(got), shards)
        if got:
            for shard in got:
                log.info("lease_acquired", shard=f"{shard[0]}/{shard[1]}", generation=got[shard])
            self.guard.allow(got)
            self.owned.update(got)
        elif len(self.owned) > share:
            extra = sorted(s for s in self.owned if s not in only_mine)[::-1][: len(self.owned) - share]
            if extra:
                await self.hand_back(extra)
        LEASES_HELD.set(len(self.owned))
        if before != self.owned:
            self.changed.set()
            self.changed = anyio.Event()

    async def hand_back(self, extra: Sequence[Shard]) -> None:
        """Rebalance: stop working on ``extra`` (cancel, let the writer store what was
        completed, within a third of the TTL so the lease is still held), then release."""
        for shard in extra:
            self.owned.pop(shard, None)
        self.guard.revoke(extra)
        with anyio.move_on_after(self.ttl / 3) as waited:
            await self.guard.drained(extra)
        if waited.cancelled_caught:
            log.warning("handover_not_drained", shards=[f"{a}/{r}" for a, r in extra])
        await self.store.release_leases(self.replica, extra)
        for shard in extra:
            log.info("lease_released", shard=f"{shard[0]}/{shard[1]}", reason="rebalance")

    async def run(self, shards_of: Callable[[], Awaitable[Sequence[Shard]]], stop: anyio.Event) -> None:
        await sleep_or_stop(self.clock, self.ttl / 3, stop)
        while not stop.is_set():
            try:
                shards = await shards_of()
                await self.tick(shards)
            except StorageError as e:  # the database may be briefly away; keep trying
                log.error("lease_tick_failed", error=str(e))
                self.owned = {}
            await sleep_or_stop(self.clock, self.ttl / 3, stop)

    async def hold(self, done: anyio.Event) -> None:
        """While a stopping replica's in-flight work finishes (the shutdown grace period,
        which may outlast the TTL): keep its heartbeat and the leases it holds alive every
        third of the TTL, claiming and handing back nothing, until ``done``. Otherwise a
        peer would take a shard over mid-write and fence the slices being written."""
        while not done.is_set():
            await sleep_or_stop(self.clock, self.ttl / 3, done)
            if done.is_set():
                return
            try:
                await self.store.heartbeat(self.replica, self.api_url)
                before, self.owned = self.owned, await self.store.renew_leases(self.replica, self.ttl)
            except StorageError as e:  # the database may be briefly away; keep trying
                log.error("lease_tick_failed", error=str(e))
                continue
            for lost in before.keys() - self.owned.keys():
                log.warning("lease_lost", shard=f"{lost[0]}/{lost[1]}")
            self.guard.revoke(before.keys() - self.owned.keys())

    async def release_all(self) -> None:
        await self.store.release_leases(self.replica, None)
        await self.store.remove_replica(self.replica)
        self.owned = {}
        LEASES_HELD.set(0)
        log.info("leases_released", replica=self.replica)

