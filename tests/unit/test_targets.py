"""collector.fleet.Targets: the fleet resolved once and again every ``ttl``; a caller
that asks not to refresh (the live loop, when the historical loop refreshes) gets the
last resolution and never starts a rediscovery of its own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from collector import fleet
from collector.fleet import Resolution, Targets
from tests.unit.helpers import target


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


async def test_a_caller_that_does_not_refresh_never_rediscovers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    clock = _Clock()

    async def resolve(rt: Any, **_kw: Any) -> Resolution:
        calls.append(clock.t)
        return Resolution(targets=[target()], failed_instances=[], failed_scopes=[])

    monkeypatch.setattr(fleet, "resolve", resolve)
    t = Targets(SimpleNamespace(clock=clock, apis={}), 60.0, lambda: None)  # type: ignore[arg-type]

    assert [x.instance_id for x in await t(refresh=False)] == [target().instance_id]  # unknown yet: resolved
    assert calls == [0.0]
    clock.t = 61.0  # past the TTL
    await t(refresh=False)
    await t(refresh=False)
    assert calls == [0.0]  # the last resolution, no rediscovery
    await t()  # the refreshing loop rediscovers
    assert calls == [0.0, 61.0]
    clock.t = 62.0
    await t()
    assert calls == [0.0, 61.0]  # within the TTL
