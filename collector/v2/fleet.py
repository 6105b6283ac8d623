"""What a V2 profile filters and joins on, per instance: agents (SearchUsers, with
names), routing profiles (ListRoutingProfiles) and user hierarchy groups
(ListUserHierarchyGroups), each paged through its own (account, Region, API) limiter
and the one retry path, stored for joins and refreshed every ``discovery_ttl``.

Queues come from the instance's resolution (:func:`collector.fleet.resolve`: its
discovered STANDARD queues, or the queues listed for it), so V2 adds no ListQueues call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from collector import errors
from collector.fleet import paged
from collector.model import Target
from collector.ports import QueueInfo, Runtime
from collector.v2 import catalog
from collector.v2.collect import Discovered
from collector.v2.ports import V2Ports
from collector.v2.settings import V2ProfileSettings

log = structlog.get_logger("collector.v2.fleet")

Resources = dict[str, list[str]]  # API filter key -> IDs


def needs(profiles: Iterable[V2ProfileSettings]) -> set[str]:
    """The API keys to discover: ``"all"`` filters, and grouped resources (for the joins)."""
    out: set[str] = set()
    for p in profiles:
        out |= {k for k, v in p.api_filters().items() if v == "all"}
        out |= set(p.groupings) & {catalog.AGENT, catalog.ROUTING_PROFILE, *catalog.HIERARCHY_LEVELS}
    return out


async def discover(rt: Runtime, ports: V2Ports, target: Target, keys: set[str]) -> Discovered:
    """One instance's resources for ``keys``, stored for joins. Raises :class:`ApiError`."""
    found = Discovered()
    found.queues = [QueueInfo(q, "", "") for q in target.queues]
    t, store = target, ports.store
    if catalog.AGENT in keys:
        found.agents = await paged(rt, t, "SearchUsers", ports.source.search_users)
        await store.save_agents(t.instance_id, t.region, t.account, found.agents)
    if catalog.ROUTING_PROFILE in keys:
        found.routing_profiles = await paged(rt, t, "ListRoutingProfiles", ports.source.list_routing_profiles)
        await store.save_routing_profiles(t.instance_id, t.region, t.account, found.routing_profiles)
    if keys & set(catalog.HIERARCHY_LEVELS):
        found.hierarchy_groups = await paged(
            rt, t, "ListUserHierarchyGroups", ports.source.list_user_hierarchy_groups
        )
        await store.save_hierarchy_groups(t.instance_id, t.region, t.account, found.hierarchy_groups)
    return found


@dataclass
class _Entry:
    at: float
    keys: frozenset[str]
    values: Resources


class ResourceCache:
    """Per instance, the discovered filter values, refreshed every ``ttl`` seconds; an
    instance whose listing fails now keeps its last known resources (as queues do)."""

    def __init__(self, rt: Runtime, ports: V2Ports, ttl: float) -> None:
        self.rt, self.ports, self.ttl = rt, ports, ttl
        self.entries: dict[str, _Entry] = {}

    async def resolve(
        self, targets: Sequence[Target], keys: set[str]
    ) -> tuple[dict[str, Resources], list[tuple[str, str]]]:
        """``{instance: {key: ids}}`` for every target that could be discovered, and
        ``(instance, reason)`` for those that could not (and have nothing cached)."""
        failed: list[tuple[str, str]] = []
        now = self.rt.clock.monotonic()

        async def one(t: Target) -> None:
            e = self.entries.get(t.instance_id)
            if e is not None and now - e.at < self.ttl and keys <= e.keys:
                e.values[catalog.QUEUE] = list(t.queues)
                return
            try:
                found = await discover(self.rt, self.ports, t, keys)
            except errors.ApiError as exc:
                log.error("v2_discovery_failed", instance=t.instance_id, reason=str(exc))
                if e is None:
                    failed.append((t.instance_id, f"V2 resource discovery failed: {exc}"))
                return
            self.entries[t.instance_id] = _Entry(now, frozenset(keys), found.filter_values())

        targets = [t for t in targets if t.unresolved is None]  # nothing to discover on those
        async with anyio.create_task_group() as tg:
            for t in targets:
                tg.start_soon(one, t)
        out = {t.instance_id: self.entries[t.instance_id].values for t in targets if t.instance_id in self.entries}
        return out, sorted(failed)
