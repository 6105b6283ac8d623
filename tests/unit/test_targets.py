"""collector.fleet.Targets: the fleet resolved once and again every ``ttl``; a caller
that does not wait (the live loop) gets the last resolution at once, and the
rediscovery runs beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from collector import errors, fleet
from collector.fleet import Resolution, Targets
from tests.unit.helpers import target


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
