"""A window's pages -> its slices, split by each result's ``MetricInterval``.

Every request of a window covers every slice of it, so a slice is whole once all
of the window's requests are: :func:`split_window` is called with the pages of
all of them, and returns one :class:`CompletedSliceV2` per slice (an empty one
for a slice no result fell in: "collected, no data").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from collector.errors import MalformedResponse
from collector.v2.model import CompletedSliceV2, MetricSetV2, PageV2, RowV2, V2Window


def split_window(
    window: V2Window,
    pages: Sequence[PageV2],
    collected_at: datetime,
    fence: tuple[str, str, int] | None = None,
) -> list[CompletedSliceV2]:
    by_start = {int(k.start.timestamp()): (i, int(k.end.timestamp())) for i, k in enumerate(window.slices)}
    parts: list[dict[MetricSetV2, list[RowV2]]] = [{} for _ in window.slices]
    seen: set[tuple[int, MetricSetV2, tuple[tuple[str, str], ...]]] = set()
    for page in pages:
        for start, end, row in page.rows:
            found = by_start.get(start)
            if found is None:
                raise MalformedResponse(
                    f"a result's MetricInterval starts at {start}, not on a slice of the window "
                    f"{window.start.isoformat()}..{window.end.isoformat()}"
                )
            i, want_end = found
            if end != want_end:
                raise MalformedResponse(
                    f"a result's MetricInterval ends at {end}, the slice starting {start} ends at {want_end}"
                )
            mark = (i, page.metrics, row[0])
            if mark in seen:
                raise MalformedResponse(
                    f"the dimension group {dict(row[0])} appears twice in the interval starting {start}"
                )
            seen.add(mark)
            parts[i].setdefault(page.metrics, []).append(row)
    return [
        CompletedSliceV2(key, list(part.items()), collected_at, fence)
        for key, part in zip(window.slices, parts, strict=True)
    ]
