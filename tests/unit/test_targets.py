"""collector.fleet.Targets: the fleet resolved once and again every ``ttl``; a caller
that does not wait (the live loop) gets the last resolution at once, and the
rediscovery runs beside it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from collector import errors, fleet
from collector.clock import ManualClock
from collector.config import AccountSettings, InstanceSettings, Settings
from collector.fleet import Resolution, Targets
from collector.model import InstanceInfo, QueueInfo, Target
from collector.pipeline import PipelineOptions
from collector.ratelimit import Limiters
from collector.runtime import Runtime
from tests.fakes import InMemoryStore, ScriptedSource
from tests.unit.helpers import NOW, target


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


async def test_a_caller_that_does_not_wait_gets_the_last_fleet_and_the_rediscovery_runs_beside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []
    clock = _Clock()

    async def resolve(rt: Any, **_kw: Any) -> Resolution:
        calls.append(clock.t)
        return Resolution(targets=[target()], failed_instances=[], failed_scopes=[])

    monkeypatch.setattr(fleet, "resolve", resolve)
    t = Targets(SimpleNamespace(clock=clock, apis={}), 60.0, lambda: None)  # type: ignore[arg-type]
    spawned: list[Callable[[], Awaitable[object]]] = []
    t.spawn = spawned.append

    assert [x.instance_id for x in await t(wait=False)] == [target().instance_id]  # unknown yet: resolved
    assert calls == [0.0] and not spawned
    await t(wait=False)
    assert calls == [0.0] and not spawned  # within the TTL
    clock.t = 61.0  # past the TTL: the last fleet at once, the rediscovery handed to spawn
    assert [x.instance_id for x in await t(wait=False)] == [target().instance_id]
    assert calls == [0.0] and len(spawned) == 1
    await spawned[0]()
    assert calls == [0.0, 61.0]
    clock.t = 62.0
    await t(wait=False)
    await t()
    assert calls == [0.0, 61.0] and len(spawned) == 1  # refreshed: nothing due


async def test_a_failed_background_rediscovery_keeps_the_last_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    fail = False

    async def resolve(rt: Any, **_kw: Any) -> Resolution:
        if fail:
            raise errors.StorageError("database away")
        return Resolution(targets=[target()], failed_instances=[], failed_scopes=[])

    monkeypatch.setattr(fleet, "resolve", resolve)
    t = Targets(SimpleNamespace(clock=clock, apis={}), 60.0, lambda: None)  # type: ignore[arg-type]
    spawned: list[Callable[[], Awaitable[object]]] = []
    t.spawn = spawned.append
    await t(wait=False)
    clock.t, fail = 61.0, True
    await t(wait=False)
    await spawned[0]()  # fails quietly
    assert [x.instance_id for x in await t(wait=False)] == [target().instance_id]
    assert len(spawned) == 2  # tried again on the next call


@dataclass
class _Fleet(ScriptedSource):
    """Each account lists its own instances; every listing is logged with the clock's time."""

    clock: ManualClock = field(default_factory=lambda: ManualClock(NOW))
    by_account: dict[str, list[str]] = field(default_factory=dict)
    listed: list[tuple[str, float]] = field(default_factory=list)  # (account, when)
    queued: list[tuple[str, float]] = field(default_factory=list)  # (instance, when)

    async def list_instances(self, target: Target, next_token: str | None) -> tuple[list[InstanceInfo], str | None]:
        self.listed.append((target.account, self.clock.monotonic()))
        return [InstanceInfo(i, f"arn:{i}", i, "ACTIVE") for i in self.by_account[target.account]], None

    async def list_queues(self, target: Target, next_token: str | None) -> tuple[list[QueueInfo], str | None]:
        self.queued.append((target.instance_id, self.clock.monotonic()))
        return [QueueInfo("q-1", "arn:q-1", "Sales")], None


@pytest.mark.parametrize("wait", [True, False], ids=["history loop", "live loop"])
async def test_rediscovery_is_spread_over_the_ttl_and_every_account_refreshed_once_per_ttl(wait: bool) -> None:
    ttl, step, n = 900.0, 5.0, 100
    accounts = [f"{100000000000 + k}" for k in range(n)]
    settings = Settings(instances=[InstanceSettings(id="i-conf", region="us-east-1")],
                        accounts=[AccountSettings(id=a, regions=["us-east-1"], instances="discover") for a in accounts])
    clock = ManualClock(NOW)
    source = _Fleet(clock=clock, by_account={a: [f"i-{a}-a", f"i-{a}-b"] for a in accounts})
    rt = Runtime(settings=settings, store=InMemoryStore(), source=source, limiters=Limiters(clock=clock), clock=clock,
                 pipeline=PipelineOptions(), apis={})
    targets = Targets(rt, ttl, lambda: None)
    spawned: list[Callable[[], Awaitable[object]]] = []
    targets.spawn = spawned.append  # the live loop's rediscoveries, run here right after each call
    first = {t.instance_id for t in await targets(wait=wait)}
    assert len(first) == 2 * n + 1 and len(source.listed) == n  # resolved whole at first
    source.listed.clear()
    source.queued.clear()
    moved = accounts[7]
    fleets: list[tuple[float, set[str]]] = []
    while clock.monotonic() < 2 * ttl:
        clock.advance(step)
        if clock.monotonic() == 300:  # an instance of one account goes, another comes
            source.by_account[moved] = [f"i-{moved}-a", f"i-{moved}-c"]
        fleet_now = {t.instance_id for t in await targets(wait=wait)}
        while spawned:
            await spawned.pop()()
            fleet_now = {t.instance_id for t in targets.cached or ()}
        fleets.append((clock.monotonic(), fleet_now))
    assert clock.slept == []  # nothing waited: the times are the calls' own
    for lo in (0.0, ttl):  # each TTL: every account listed once, every instance's queues once
        per = Counter(a for a, at in source.listed if lo < at <= lo + ttl)
        assert per == dict.fromkeys(accounts, 1)
        queues = Counter(i for i, at in source.queued if lo < at <= lo + ttl)
        assert set(queues.values()) == {1} and len(queues) == 2 * n + 1
    # spread: no tenth of the TTL holds more than a tenth of the accounts (plus one step's worth)
    for w in range(int(2 * ttl / step)):
        lo = w * step
        assert sum(1 for _a, at in source.listed if lo < at <= lo + ttl / 10) <= n / 10 + 1, lo
    # the moved account's instances change at its own next turn, not before
    turn = min(at for a, at in source.listed if a == moved and at > 300)
    gone, new = f"i-{moved}-b", f"i-{moved}-c"
    assert all(gone in f and new not in f for at, f in fleets if at < turn)
    assert all(gone not in f and new in f and len(f) == 2 * n + 1 for at, f in fleets if at >= turn)
