"""Progress callbacks of a collection (the CLI's bar is :mod:`collector.terminal`)."""

from __future__ import annotations

from collections.abc import Sequence

from collector.model import SliceKey
from collector.retry import Counters


class Progress:
    """Callbacks for progress; the default does nothing."""

    def slices_written(self, keys: Sequence[SliceKey], rows: int) -> None:
        pass

    def slice_failed(self, key: SliceKey, reason: str) -> None:
        pass

    def counters(self, counters: Counters) -> None:
        pass
