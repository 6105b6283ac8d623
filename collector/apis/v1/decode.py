"""GetMetricData results -> rows: one (dimensions, values) pair per dimension group.

Works on the parsed shape (botocore's output, or the wire body as msgspec decodes
it in :func:`decode_page`: the field names are the same). Values follow the request's metric order;
a metric the API returned without ``Value`` is ``None`` (stored as NULL).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from collector.apis.v1.model import Dims, MetricSet
from collector.apis.wire import collection_values, decode_body, decode_metric, ref_id
from collector.errors import MalformedResponse


def metric_index(metrics: MetricSet) -> dict[tuple[str, float | None], int]:
    return {(m.name, None if m.threshold is None else float(m.threshold)): i for i, m in enumerate(metrics)}


def _str(v: Any, field: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise MalformedResponse(f"Dimensions.{field} is not a string")


def dims_of(d: Mapping[str, Any] | None) -> Dims:
    if not d:
        return (None, None, None, None, None, None, None)
    if not isinstance(d, Mapping):
        raise MalformedResponse("Dimensions is not an object")
    return (
        ref_id(d.get("Queue"), "Dimensions.Queue"),
        _str(d.get("Channel"), "Channel"),
        ref_id(d.get("RoutingProfile"), "Dimensions.RoutingProfile"),
        ref_id(d.get("AgentStatus"), "Dimensions.AgentStatus"),
        _str(d.get("RoutingStepExpression"), "RoutingStepExpression"),
        _str(d.get("Subtype"), "Subtype"),
        _str(d.get("ValidationTestType"), "ValidationTestType"),
    )


def rows_of(
    results: Iterable[Mapping[str, Any]] | None,
    metrics: MetricSet,
    index: dict[tuple[str, float | None], int] | None = None,
) -> list[tuple[Dims, list[float | None]]]:
    """Decode ``MetricResults``; raise :class:`MalformedResponse` on anything unexpected."""
    if results is None:
        return []
    if not isinstance(results, list):
        raise MalformedResponse("MetricResults is not a list")
    idx = index if index is not None else metric_index(metrics)
    n = len(metrics)
    out: list[tuple[Dims, list[float | None]]] = []
    for res in results:
        if not isinstance(res, Mapping):
            raise MalformedResponse("a MetricResults entry is not an object")
        values: list[float | None] = [None] * n
        colls = res.get("Collections") or []
        if not isinstance(colls, list):
            raise MalformedResponse("Collections is not a list")
        for c in colls:
            try:
                metric = c["Metric"]
                name = metric["Name"]
            except (KeyError, TypeError):
                raise MalformedResponse("a Collections entry has no Metric.Name") from None
            thr = metric.get("Threshold")
            tv = None
            if thr:
                raw = thr.get("ThresholdValue")
                tv = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
            pos = idx.get((name, tv))
            if pos is None:
                raise MalformedResponse(f"result has metric {name!r} (threshold {tv}) that was not requested")
            v = c.get("Value")
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise MalformedResponse(f"Value of {name} is {v!r}, not a number")
                v = float(v)
            values[pos] = v
        out.append((dims_of(res.get("Dimensions")), values))
    return out


# -- the fast path: typed decoding of the wire body ------------------------------------
# msgspec decodes straight into these structs (no dicts for the ~27 metric objects a
# group carries); each group's ``Metric`` object is kept as raw JSON bytes and mapped to
# its position through a cache, so each distinct metric object is decoded once.

class _Ref(msgspec.Struct, gc=False):
    Id: str | None = None
    Arn: str | None = None


class _Dims(msgspec.Struct, gc=False):
    Queue: _Ref | None = None
    Channel: str | None = None
    RoutingProfile: _Ref | None = None
    AgentStatus: _Ref | None = None
    RoutingStepExpression: str | None = None
    Subtype: str | None = None
    ValidationTestType: str | None = None


class _Collection(msgspec.Struct, gc=False):
    Metric: msgspec.Raw
    Value: float | None = None


class _Result(msgspec.Struct, gc=False):
    Dimensions: _Dims | None = None
    Collections: list[_Collection] = msgspec.field(default_factory=list)


class _Page(msgspec.Struct, gc=False):
    MetricResults: list[_Result] | None = None
    NextToken: str | None = None


class _Threshold(msgspec.Struct, gc=False):
    Comparison: str | None = None
    ThresholdValue: float | None = None


class _Metric(msgspec.Struct, gc=False):
    Name: str
    Threshold: _Threshold | None = None


_PAGE = msgspec.json.Decoder(_Page)
_METRIC = msgspec.json.Decoder(_Metric)
_NO_DIMS: Dims = (None, None, None, None, None, None, None)


def _ref(r: _Ref | None) -> str | None:
    if r is None:
        return None
    if r.Id is None and r.Arn:
        return r.Arn.rsplit("/", 1)[-1]
    return r.Id


def decode_page(
    body: bytes,
    metrics: MetricSet,
    index: dict[tuple[str, float | None], int],
    cache: dict[bytes, int],
) -> tuple[list[tuple[Dims, list[float | None]]], str | None]:
    """A GetMetricData 200 body -> (rows, NextToken); :class:`MalformedResponse` on
    anything that is not the documented shape (a string Value, truncated JSON, ...)."""
    page = decode_body(_PAGE, body, "GetMetricData")
    n = len(metrics)
    out: list[tuple[Dims, list[float | None]]] = []


    def position(raw: bytes) -> int:
        m = decode_metric(_METRIC, raw)
        tv = m.Threshold.ThresholdValue if m.Threshold else None
        found = index.get((m.Name, tv))
        if found is None:
            raise MalformedResponse(f"result has metric {m.Name!r} (threshold {tv}) that was not requested")
        return found

    for res in page.MetricResults or ():
        values = collection_values(res.Collections, n, cache, position)
        d = res.Dimensions
        dims: Dims = _NO_DIMS if d is None else (
            _ref(d.Queue), d.Channel, _ref(d.RoutingProfile), _ref(d.AgentStatus),
            d.RoutingStepExpression, d.Subtype, d.ValidationTestType,
        )
        out.append((dims, values))
    return out, page.NextToken or None
