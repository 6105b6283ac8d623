"""Which instances, queues and other resources exist: configured, per-account listed
and discovered instances, their STANDARD queues (ListQueues), the agents, routing
profiles and hierarchy groups the profiles need (SearchUsers, ListRoutingProfiles,
ListUserHierarchyGroups), and the targets cache the scheduler refreshes (each account
and Region, and each configured instance, once every ``discovery_ttl`` on its own
schedule, staggered over the TTL; everything when this replica's leases change): one
resolution feeds every profile, whatever its metric API."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import structlog

from collector import errors
from collector.config import AccountSettings, InstanceSettings, Settings
from collector.model import QueueInfo, Shard, Target
from collector.retry import RetryPolicy, retry
from collector.runtime import Runtime

log = structlog.get_logger("collector.fleet")

T = TypeVar("T")
RESOURCE_KINDS = ("agents", "routing_profiles", "hierarchy_groups")


def discovering(settings: Settings) -> list[AccountSettings]:
    return [a for a in settings.accounts if a.instances is not None]


def select_instances(settings: Settings, instances: Sequence[str]) -> list[InstanceSettings]:
    """The configured [[instances]] to collect (``instances`` narrows them down)."""
    configured = settings.instances
    listed = {i for a in discovering(settings) if isinstance(a.instances, list) for i in a.instances}
    if instances:
        known = {i.id for i in configured} | listed
        unknown = [i for i in instances if i not in known]
        if unknown and not any(a.instances == "discover" for a in discovering(settings)):
            raise errors.ConfigError(
                f"instance {unknown[0]!r} is not in the config's [[instances]]", field="instances"
            )
        configured = [i for i in configured if i.id in set(instances)]
    if not configured and not discovering(settings):
        raise errors.ConfigError("no [[instances]] or [[accounts]] with instances configured; nothing to collect")
    return configured


def target_for(
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


def shards(settings: Settings, instances: Sequence[str] = ()) -> list[Shard]:
    """The (account, Region) shards a collection touches, known without calling AWS:
    every shard of the config, or those ``instances`` can be in."""
    chosen = set(instances)
    out = {
        (target_for(settings, i.id, i.region, i.account, aws_profile=i.aws_profile).account, i.region)
        for i in settings.instances
        if not chosen or i.id in chosen
    }
    for a in discovering(settings):
        assert a.id is not None
        listed = a.instances if isinstance(a.instances, list) else None
        if not chosen or listed is None or chosen & set(listed):
            out |= {(a.id, r) for r in a.regions}
    return sorted(out)


WHOLE = ""  # the scope of a resolution that names none: everything, refreshed as one


def instance_scope(instance_id: str) -> str:
    return f"instance {instance_id}"


def account_scope(account: str, region: str) -> str:
    return f"account {account}/{region}"  # as a failed account is named


def scopes(settings: Settings, only: Sequence[str] = ()) -> list[str]:
    """What is rediscovered as one: each configured instance, each discovering (account,
    Region), in config order."""
    return ([instance_scope(i.id) for i in select_instances(settings, only)]
            + [account_scope(a.id, r) for a in discovering(settings) if a.id is not None for r in a.regions])


def stagger(keys: Sequence[str], ttl: float) -> dict[str, float]:
    """Each key's offset in (0, ttl]: ranked by a hash of the key (deterministic, and the
    same for a key whatever else is configured around it in that order), evenly spaced,
    so any window of ttl/k holds about 1/k of the keys."""
    ranked = sorted(keys, key=lambda k: (hashlib.blake2b(k.encode(), digest_size=8).digest(), k))
    return {k: ttl * (n + 1) / len(ranked) for n, k in enumerate(ranked)}


async def paged(
    rt: Runtime, target: Target, api: str,
    call: Callable[[Target, str | None], Awaitable[tuple[list[T], str | None]]],
) -> list[T]:
    """Page a listing call to its end through the account's limiter, with retries."""
    limiter = rt.limiters.get(target.account, target.region, api)
    policy = RetryPolicy(max_attempts=rt.settings.aws.max_attempts)
    rng = random.Random()
    out: list[T] = []
    token: str | None = None
    while True:
        items, token = await retry(
            functools.partial(call, target, token), operation=api, policy=policy, clock=rt.clock, rng=rng,
            limiter=limiter, shard=target.limiter_key,
        )
        out.extend(items)
        if not token:
            return out


async def discover_queues(rt: Runtime, target: Target) -> list[QueueInfo]:
    """ListQueues (STANDARD) paged to the end, through the per-account limiter."""
    return await paged(rt, target, "ListQueues", rt.source.list_queues)


async def discover_resource(rt: Runtime, t: Target, kind: str) -> tuple[str, ...]:
    """One kind of resource of ``t``, paged to the end and stored for joins; the IDs.
    ListUserHierarchyGroups does not give a group's level, so every group is listed
    (a filter on a level matches the groups of that level)."""
    store, source = rt.store, rt.source
    if kind == "agents":  # SearchUsers also gives names (for the agents table)
        agents = await paged(rt, t, "SearchUsers", source.search_users)
        await store.save_agents(t.instance_id, t.region, t.account, agents)
        return tuple(a.id for a in agents)
    if kind == "routing_profiles":
        rps = await paged(rt, t, "ListRoutingProfiles", source.list_routing_profiles)
        await store.save_routing_profiles(t.instance_id, t.region, t.account, rps)
        return tuple(r.id for r in rps)
    groups = await paged(rt, t, "ListUserHierarchyGroups", source.list_user_hierarchy_groups)
    await store.save_hierarchy_groups(t.instance_id, t.region, t.account, groups)
    return tuple(g.id for g in groups)


@dataclass
class Resolution:
    targets: list[Target]
    failed_instances: list[tuple[str, str]]  # (instance id, reason): their slices fail
    failed_scopes: list[tuple[str, str]]  # ("account A/region", reason): nothing known to plan
    unresolved: list[Target] = dataclasses.field(default_factory=list)  # the failed instances, with reasons
    scopes: list[str] = dataclasses.field(default_factory=list)  # what was resolved (see ``scopes``)
    scope_of: dict[str, str] = dataclasses.field(default_factory=dict)  # instance id -> its scope


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """A failure no instance or account is isolated from (the database went away) leaves
    the resolution as one project error, not an ExceptionGroup, so callers can retry it."""
    try:
        yield
    except BaseExceptionGroup as eg:
        leaves: list[BaseException] = []
        stack: list[BaseException] = [eg]
        while stack:
            e = stack.pop()
            if isinstance(e, BaseExceptionGroup):
                stack.extend(reversed(e.exceptions))
            else:
                leaves.append(e)
        if leaves and all(isinstance(e, errors.CollectorError) for e in leaves):
            raise leaves[0] from None
        raise


class _Resolver:
    """One resolution: instances (configured, listed, discovered), then their queues."""

    def __init__(
        self, rt: Runtime, only: Sequence[str], owned: dict[Shard, int] | None, needs: frozenset[str],
        within: frozenset[str] | None = None,
    ) -> None:
        self.rt, self.only, self.owned, self.needs, self.within = rt, only, owned, needs, within
        self.specs: dict[str, Target] = {}
        self.scope_of: dict[str, str] = {}
        self.configured = {i.id for i in rt.settings.instances}
        self.failed_scopes: list[tuple[str, str]] = []
        self.resolved: dict[str, Target | str] = {}

    def mine(self, t: Target) -> Target | None:
        """With leases, only this replica's shards are touched, stamped with the lease."""
        if self.owned is None:
            return t
        gen = self.owned.get(t.limiter_key)
        return None if gen is None else dataclasses.replace(t, lease=gen)

    async def discover(self, acct: AccountSettings, region: str) -> None:
        assert acct.id is not None
        settings = self.rt.settings
        probe = target_for(settings, "", region, acct.id)
        if self.owned is not None and probe.limiter_key not in self.owned:
            return
        ids: list[tuple[str, str | None, str | None]]
        try:
            if acct.instances == "discover":
                found = await paged(self.rt, probe, "ListInstances", self.rt.source.list_instances)
                ids = [(i.id, i.arn, i.alias) for i in found if i.status == "ACTIVE"]
            else:
                ids = [(i, None, None) for i in acct.instances or []]
        except errors.ApiError as e:
            log.error("account_failed", account=acct.id, region=region, reason=str(e))
            self.failed_scopes.append((f"account {acct.id}/{region}", str(e)))
            return
        for iid, arn, alias in ids:
            if self.only and iid not in self.only:
                continue
            await self.rt.store.save_instance(iid, region, acct.id, arn, alias)
            if iid in self.configured:  # an [[instances]] entry: resolved as its own scope
                continue
            t1 = self.mine(target_for(settings, iid, region, acct.id))
            if t1 is not None and iid not in self.specs:
                self.specs[iid] = t1
                self.scope_of[iid] = account_scope(acct.id, region)

    async def queues_of(self, t: Target) -> None:
        rt = self.rt
        await rt.store.instance_ref(t.instance_id, t.region, t.account)
        listed = {i.id: i.queues for i in rt.settings.instances}.get(t.instance_id, "all")
        if listed == "all":
            try:
                found = await discover_queues(rt, t)
            except (errors.ApiError, errors.MalformedResponse) as e:
                log.error("instance_failed", instance=t.instance_id, reason=str(e))
                self.resolved[t.instance_id] = f"queue discovery failed: {e}"
                return
            await rt.store.save_queues(t.instance_id, t.region, t.account, found)
            queues = tuple(q.id for q in found)
            if not queues:
                self.resolved[t.instance_id] = "instance has no STANDARD queues"
                return
        else:
            queues = tuple(dict.fromkeys(q.rsplit("/", 1)[-1] for q in listed))
        self.resolved[t.instance_id] = await self.resources_of(dataclasses.replace(t, queues=queues))

    async def resources_of(self, t: Target) -> Target:
        """The resources the profiles need; a kind that cannot be listed now is ``missing``
        (with why): only the profiles that need it fail their slices of this instance."""
        found: list[tuple[str, tuple[str, ...]]] = []
        missing: list[tuple[str, str]] = []
        for kind in RESOURCE_KINDS:
            if kind not in self.needs:
                continue
            try:
                found.append((kind, await discover_resource(self.rt, t, kind)))
            except (errors.ApiError, errors.MalformedResponse) as e:
                log.error("resource_discovery_failed", instance=t.instance_id, kind=kind, reason=str(e))
                missing.append((kind, str(e)))
        return dataclasses.replace(t, resources=tuple(found), missing=tuple(missing))

    def wanted(self, scope: str) -> bool:
        return self.within is None or scope in self.within

    async def __call__(self) -> Resolution:
        settings = self.rt.settings
        resolved = [x for x in scopes(settings, self.only) if self.wanted(x)]
        for inst in select_instances(settings, self.only):
            if not self.wanted(instance_scope(inst.id)):
                continue
            t0 = self.mine(target_for(settings, inst.id, inst.region, inst.account, aws_profile=inst.aws_profile))
            if t0 is not None:
                self.specs[inst.id] = t0
                self.scope_of[inst.id] = instance_scope(inst.id)
        with _one_error():
            async with anyio.create_task_group() as tg:
                for acct in discovering(settings):
                    for region in acct.regions:
                        if acct.id is not None and self.wanted(account_scope(acct.id, region)):
                            tg.start_soon(self.discover, acct, region)
            # Queue discovery runs for every instance at once; each account's limiter paces it.
            async with anyio.create_task_group() as tg:
                for t in self.specs.values():
                    tg.start_soon(self.queues_of, t)
        order = list(self.specs)
        failed = [(i, y) for i in order if isinstance(y := self.resolved[i], str)]
        return Resolution(
            targets=[x for i in order if isinstance(x := self.resolved[i], Target)],
            failed_instances=failed,
            failed_scopes=sorted(self.failed_scopes),
            unresolved=[dataclasses.replace(self.specs[i], unresolved=y) for i, y in failed],
            scopes=resolved,
            scope_of=self.scope_of,
        )


async def resolve(
    rt: Runtime, only: Sequence[str] = (), owned: dict[Shard, int] | None = None,
    needs: frozenset[str] = frozenset(), within: frozenset[str] | None = None,
) -> Resolution:
    """Every instance to collect, with its queues and the resource kinds ``needs``.
    Accounts with ``instances`` are discovered (ListInstances, ACTIVE only) per Region;
    a broken account, instance or listing fails only its own work, with the reason.
    ``owned`` (shard -> lease generation) narrows it to this replica's shards, ``within``
    to these scopes (see ``scopes``; a configured instance is never one of an account's)."""
    return await _Resolver(rt, only, owned, needs, within)()


def needs_of(rt: Runtime) -> frozenset[str]:
    """The resource kinds any profile needs discovered."""
    return frozenset().union(*(api.needs for api in rt.apis.values()))


class Targets:
    """The scheduler's targets: every instance the config reaches (listed, per-account
    listed, discovered), resolved whole at first and when the leases ``owned()`` reports
    change, and then rediscovered a scope at a time (a discovering account and Region with
    its instances, or a configured instance): each once every ``ttl`` seconds, at its own
    offset in the TTL (``stagger``), so at any moment about 1/N of the fleet rediscovers
    instead of all of it in one burst. A scope's rediscovery replaces its instances: new
    ones are picked up and removed ones dropped. An instance whose listing fails now keeps
    its last known queues (also when its account's discovery fails); one never resolved is
    a target with ``unresolved`` set: its slices fail with the reason every round."""

    def __init__(self, rt: Runtime, ttl: float, owned: Callable[[], dict[Shard, int] | None]) -> None:
        self.rt, self.ttl, self.owned = rt, ttl, owned
        self.cached: list[Target] | None = None
        self.last_owned: dict[Shard, int] | None = None
        self.problems: list[tuple[str, str]] = []  # (instance or account, reason) of the last resolutions
        self.order: list[str] = []  # the scopes, in config order
        self.due: dict[str, float] = {}  # scope -> when it is rediscovered next (monotonic)
        self._scope_of: dict[str, str] = {}  # instance id -> scope
        self._problems: dict[str, list[tuple[str, str]]] = {}  # scope -> its problems
        self._lock = anyio.Lock()
        # starts a background rediscovery for a caller that does not wait (the service's task group)
        self.spawn: Callable[..., object] | None = None

    @property
    def collectable(self) -> int | None:
        """How many instances can be collected (None: not resolved yet)."""
        return None if self.cached is None else sum(1 for t in self.cached if t.unresolved is None)

    def due_now(self) -> list[str]:
        """The scopes whose turn has come."""
        now = self.rt.clock.monotonic()
        return [x for x in self.order if self.due.get(x, math.inf) <= now]

    async def __call__(self, wait: bool = True) -> Sequence[Target]:
        """The fleet; each scheduler loop asks. While one resolves (part of) it again, the
        others go on with the last resolution. ``wait=False`` (the live loop) never waits on
        a rediscovery once the fleet is known: when a scope is due, its rediscovery (its
        instances' queues, agents and routing profiles) starts in the background (``spawn``)
        and the caller goes on with the last resolution."""
        if self.cached is not None and self._lock.locked():
            return self.cached
        if not wait and self.cached is not None and self.spawn is not None and self.owned() == self.last_owned:
            if self.due_now():
                self.spawn(self._refresh)
            return self.cached
        async with self._lock:
            owned = self.owned()
            whole = self.cached is None or owned != self.last_owned
            due = self.due_now()
            if whole or due:
                self.last_owned = owned
                within = None if whole or WHOLE in due else frozenset(due)
                res = await resolve(self.rt, owned=owned, needs=needs_of(self.rt), within=within)
                for where, reason in res.failed_instances + res.failed_scopes:
                    log.error("instance_unavailable", instance=where, reason=reason)
                self._apply(res, within)
            assert self.cached is not None
            return self.cached

    async def _refresh(self) -> None:
        """A rediscovery in the background; if it fails, the next call tries again."""
        if self._lock.locked():
            return
        try:
            await self()
        except errors.CollectorError as e:  # the database or an account away: the last resolution stays
            log.warning("targets_refresh_failed", reason=str(e))

    def _apply(self, res: Resolution, within: frozenset[str] | None) -> None:
        """Take in a resolution of ``within`` (None: of everything) and set when each
        scope it resolved is due next: first at its offset in the TTL, then every TTL."""
        now = self.rt.clock.monotonic()
        if within is None:
            self.order = list(res.scopes) or [WHOLE]
            offsets = stagger(self.order, self.ttl)
            self.due = {x: self.due[x] if x in self.due else now + offsets[x] for x in self.order}
            redone = set(self.order)
        else:
            redone = set(within)
        self._scope_of.update(res.scope_of)
        scope = functools.partial(self._scope, res)
        problems = res.failed_instances + res.failed_scopes
        for x in redone:
            self._problems[x] = []
        for p in problems:
            self._problems.setdefault(scope(p[0]), []).append(p)
        self.problems = [p for x in self.order for p in self._problems.get(x, ())]
        if within is None:  # everything again: nothing is kept but what failed now
            kept, before = [], list(self.cached or ())
        else:
            kept = [t for t in self.cached or () if scope(t.instance_id) not in redone]
            before = [t for t in self.cached or () if scope(t.instance_id) in redone]
        rank = {x: n for n, x in enumerate(self.order)}
        merged = kept + self._merged(res, before, problems)
        self.cached = sorted(merged, key=lambda t: rank.get(scope(t.instance_id), len(rank)))  # stable
        for x in redone:  # the next turn on its own grid: once per TTL
            at = self.due.get(x, now + self.ttl)
            if at <= now:
                at += self.ttl * (math.floor((now - at) / self.ttl) + 1)
            self.due[x] = at

    def _scope(self, res: Resolution, where: str) -> str:
        """The scope of an instance id (or of a failed account, named as its scope)."""
        if WHOLE in self.order:
            return WHOLE
        return res.scope_of.get(where) or self._scope_of.get(where) or where

    def _merged(self, res: Resolution, before_targets: Sequence[Target],
                problems: Sequence[tuple[str, str]]) -> list[Target]:
        """This resolution, with what failed now taken from the last one: an instance keeps
        its last known queues, and a resource kind its last known IDs."""
        before = {t.instance_id: t for t in before_targets if t.unresolved is None}
        targets = [_keep_resources(t, before.get(t.instance_id)) for t in res.targets]
        have = {t.instance_id for t in targets}
        gone = {i for i, _r in problems}
        targets += [t for i, t in before.items() if i not in have
                    and (i in gone or account_scope(t.account, t.region) in gone)]
        have = {t.instance_id for t in targets}
        return targets + [t for t in res.unresolved if t.instance_id not in have]


def _keep_resources(t: Target, before: Target | None) -> Target:
    if before is None or not t.missing:
        return t
    kept = [(k, ids) for k, ids in before.resources if k in dict(t.missing)]
    if not kept:
        return t
    still = tuple((k, why) for k, why in t.missing if k not in dict(kept))
    return dataclasses.replace(t, resources=t.resources + tuple(kept), missing=still)
