"""A window's pages -> its slices, split by each result's ``MetricInterval``.

Every request of a window covers every slice of it, so a slice is whole once all
of the window's requests are: :func:`split_window` is called with the pages of
all of them, and returns one :class:`collector.ports.CompletedSlice` per slice (an empty one
for a slice no result fell in: "collected, no data").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from collector.apis.v2.codec import CODEC
from collector.apis.v2.model import MetricSetV2, PageV2, RowV2
from collector.errors import MalformedResponse
from collector.model import Fence, SliceKey
from collector.ports import CompletedSlice


def split_window(
    slices: Sequence[SliceKey],
    pages: Sequence[PageV2],
    collected_at: datetime,
    fence: Fence | None = None,
) -> list[CompletedSlice]:
    by_start = {int(k.start.timestamp()): (i, int(k.end.timestamp())) for i, k in enumerate(slices)}
    parts: list[dict[MetricSetV2, list[RowV2]]] = [{} for _ in slices]
    seen: set[tuple[int, MetricSetV2, tuple[tuple[str, str], ...]]] = set()
    for page in pages:
        for start, end, row in page.rows:
            found = by_start.get(start)
            if found is None:
                raise MalformedResponse(
                    f"a result's MetricInterval starts at {start}, not on a slice of the window "
                    f"{slices[0].start.isoformat()}..{slices[-1].end.isoformat()}"
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
        CompletedSlice(key, list(part.items()), collected_at, fence, CODEC)
        for key, part in zip(slices, parts, strict=True)
    ]
