"""GetMetricDataV2 results -> rows per interval: (interval start, interval end, (dims, values)).

Two readers of the same shape: :func:`rows_of` for botocore's parsed output (the
plain path, timestamps as datetimes) and :func:`decode_page` for the wire body
(the fast path: msgspec straight into structs, timestamps as epoch numbers).
Values follow the request's metric order; a ``Value`` that is absent or null
(divide by zero, not enough data) is ``None``, stored as NULL.

A returned ``Metric`` is matched to the request's entry by name, threshold and
metric filters; where the API leaves the echo short (no ``MetricFilters``), a name
requested only once is matched by name alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from collector.apis.v2.catalog import NEXT_TOKEN_MAX
from collector.apis.v2.model import DimsV2, MetricKey, MetricSetV2, PageV2, RowV2, metric_key
from collector.apis.wire import collection_values, decode_body, decode_metric
from collector.errors import MalformedResponse


class MetricIndex:
    """Where each returned Metric object goes in a row's values."""

    def __init__(self, metrics: MetricSetV2) -> None:
        self.n = len(metrics)
        self.by_key: dict[MetricKey, int] = {m.match_key: i for i, m in enumerate(metrics)}
        names = [m.name for m in metrics]
        self.by_name = {n: i for i, n in enumerate(names) if names.count(n) == 1}
        self.cache: dict[bytes, int] = {}  # raw Metric JSON -> position (fast path)
        # Dimensions as returned (and sorted) -> the one sorted tuple for them: a dimension
        # group recurs in every interval of every page, and a window is held whole until it
        # is written, so rows share one tuple (and its strings) rather than a copy each.
        # Bounded by the fleet's dimension groups, as the writer's id cache is.
        self.dims: dict[tuple[tuple[str, str], ...], DimsV2] = {}

    def intern(self, items: tuple[tuple[str, str], ...]) -> DimsV2:
        """The shared sorted tuple for a result's Dimensions items."""
        dims = self.dims.get(items)
        if dims is None:
            key = tuple(sorted(items))
            dims = self.dims.setdefault(key, key)
            self.dims[items] = dims
        return dims

    def find(self, metric: Mapping[str, Any]) -> int:
        try:
            name = metric["Name"]
        except (KeyError, TypeError):
            raise MalformedResponse("a Collections entry has no Metric.Name") from None
        thr = None
        thresholds = metric.get("Threshold") or []
        if isinstance(thresholds, Mapping):
            thresholds = [thresholds]
        if thresholds:
            t = thresholds[0]
            raw = t.get("ThresholdValue") if isinstance(t, Mapping) else None
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                thr = (str(t.get("Comparison")), float(raw))
        filters = [
            (str(f.get("MetricFilterKey")), tuple(f.get("MetricFilterValues") or ()), bool(f.get("Negate", False)))
            for f in metric.get("MetricFilters") or []
            if isinstance(f, Mapping)
        ]
        pos = self.by_key.get(metric_key(str(name), thr, filters))
        if pos is None and not filters:
            pos = self.by_name.get(str(name))
        if pos is None:
            raise MalformedResponse(
                f"result has metric {name!r} (threshold {thr}, filters {filters}) that was not requested"
            )
        return pos


def _epoch(v: Any, field: str) -> int:
    if isinstance(v, datetime):
        return int(v.timestamp())
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return int(v)
    raise MalformedResponse(f"MetricInterval.{field} is {v!r}, not a time")


def _dims(d: Any, index: MetricIndex) -> DimsV2:
    if not d:
        return ()
    if not isinstance(d, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
        raise MalformedResponse("Dimensions is not a map of strings")
    return index.intern(tuple(d.items()))


def rows_of(results: Sequence[Mapping[str, Any]] | None, index: MetricIndex) -> list[tuple[int, int, RowV2]]:
    """Decode ``MetricResults`` (parsed); :class:`MalformedResponse` on anything unexpected."""
    if results is None:
        return []
    if not isinstance(results, list):
        raise MalformedResponse("MetricResults is not a list")
    out: list[tuple[int, int, RowV2]] = []
    for res in results:
        if not isinstance(res, Mapping):
            raise MalformedResponse("a MetricResults entry is not an object")
        mi = res.get("MetricInterval")
        if not isinstance(mi, Mapping):
            raise MalformedResponse("a result has no MetricInterval")
        start, end = _epoch(mi.get("StartTime"), "StartTime"), _epoch(mi.get("EndTime"), "EndTime")
        values: list[float | None] = [None] * index.n
        colls = res.get("Collections") or []
        if not isinstance(colls, list):
            raise MalformedResponse("Collections is not a list")
        for c in colls:
            if not isinstance(c, Mapping):
                raise MalformedResponse("a Collections entry is not an object")
            pos = index.find(c.get("Metric") or {})
            v = c.get("Value")
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise MalformedResponse(f"a Value is {v!r}, not a number")
                v = float(v)
            values[pos] = v
        out.append((start, end, (_dims(res.get("Dimensions"), index), values)))
    return out


# -- the fast path -------------------------------------------------------------------
class _Interval(msgspec.Struct, gc=False):
    StartTime: float
    EndTime: float
    Interval: str | None = None


class _Collection(msgspec.Struct, gc=False):
    Metric: msgspec.Raw
    Value: float | None = None


class _Result(msgspec.Struct, gc=False):
    MetricInterval: _Interval
    Dimensions: dict[str, str] | None = None
    Collections: list[_Collection] = msgspec.field(default_factory=list)


class _Page(msgspec.Struct, gc=False):
    MetricResults: list[_Result] | None = None
    NextToken: str | None = None


_PAGE = msgspec.json.Decoder(_Page)
_METRIC = msgspec.json.Decoder(dict[str, Any])


def decode_page(body: bytes, metrics: MetricSetV2, index: MetricIndex) -> PageV2:
    """A GetMetricDataV2 200 body -> :class:`PageV2`; :class:`MalformedResponse` on
    anything that is not the documented shape."""
    page = decode_body(_PAGE, body, "GetMetricDataV2")
    n = index.n
    cache = index.cache
    dims_cache = index.dims
    times: dict[int, int] = {}
    out: list[tuple[int, int, RowV2]] = []


    def position(raw: bytes) -> int:
        metric: dict[str, Any] = decode_metric(_METRIC, raw)
        return index.find(metric)

    for res in page.MetricResults or ():
        values = collection_values(res.Collections, n, cache, position)
        mi = res.MetricInterval
        if not (math.isfinite(mi.StartTime) and math.isfinite(mi.EndTime)):
            raise MalformedResponse("MetricInterval has a time that is not finite")
        d = res.Dimensions
        if d:
            items = tuple(d.items())
            dims = dims_cache.get(items)
            if dims is None:
                dims = index.intern(items)
        else:
            dims = ()
        start, end = int(mi.StartTime), int(mi.EndTime)
        # one int object per interval bound, not two per row (the page is held until its window is split)
        out.append((times.setdefault(start, start), times.setdefault(end, end), (dims, values)))
    return PageV2(metrics, out, next_token(page.NextToken))


def next_token(token: Any) -> str | None:
    """The page's NextToken, refused if the API could not take it back (over 2,500 characters)."""
    if not token:
        return None
    if not isinstance(token, str) or len(token) > NEXT_TOKEN_MAX:
        raise MalformedResponse(f"NextToken is not a string of at most {NEXT_TOKEN_MAX} characters")
    return token
