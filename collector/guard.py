"""Which shards this process may work on, and its work in flight per shard."""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

import anyio

from collector.model import Shard


class ShardGuard:
    """The shards this process may work on, and its work in flight per shard: revoking a
    shard (its lease is handed back or lost) cancels that shard's fetchers in every pipeline,
    and :meth:`drained` waits until what they completed has been written."""

    def __init__(self) -> None:
        self._scopes: dict[Shard, set[anyio.CancelScope]] = defaultdict(set)
        self._pending: Counter[Shard] = Counter()  # completed slices not yet written
        self._revoked: set[Shard] = set()
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @contextlib.contextmanager
    def working(self, shard: Shard) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            if shard in self._revoked:
                scope.cancel()
            self._scopes[shard].add(scope)
            try:
                yield scope
            finally:
                self._scopes[shard].discard(scope)
                self._notify()

    def sent(self, shard: Shard) -> None:
        self._pending[shard] += 1

    def written(self, shards: Iterable[Shard]) -> None:
        for shard in shards:
            self._pending[shard] -= 1
        self._notify()

    def revoke(self, shards: Iterable[Shard]) -> None:
        for shard in shards:
            self._revoked.add(shard)
            for scope in list(self._scopes[shard]):
                scope.cancel()

    def allow(self, shards: Iterable[Shard]) -> None:
        self._revoked.difference_update(shards)

    def busy(self, shards: Iterable[Shard]) -> bool:
        return any(self._scopes[s] or self._pending[s] > 0 for s in shards)

    async def drained(self, shards: Sequence[Shard]) -> None:
        """Until no fetcher of ``shards`` runs and their completed slices are written."""
        while self.busy(shards):
            await self._changed.wait()
