"""What the metric APIs share on the wire: paged request arguments, and the fast
decoders' pieces (a body or one metric object decoded by msgspec, anything not of the
documented shape a :class:`MalformedResponse`; a result's values in metric order)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from collector.errors import MalformedResponse

T = TypeVar("T")


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes, api: str) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        raise MalformedResponse(f"{api} body does not match the API: {e}") from None
    except msgspec.DecodeError as e:
        raise MalformedResponse(f"{api} body is not JSON: {e}") from None


def decode_metric(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """A Collections entry's ``Metric`` object (each distinct one is decoded once)."""
    try:
        return decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise MalformedResponse("a Collections entry has no valid Metric") from None


class Collection(Protocol):
    """One ``Collections`` entry as msgspec decodes it: the raw Metric object and its Value."""

    @property
    def Metric(self) -> msgspec.Raw: ...

    @property
    def Value(self) -> float | None: ...


def collection_values(
    collections: Sequence[Collection], n: int, cache: dict[bytes, int], position: Callable[[bytes], int]
) -> list[float | None]:
    """A result's values in the request's metric order (None where the API gave none).
    ``position`` maps a Metric object not seen before to its place; ``cache`` remembers it."""
    values: list[float | None] = [None] * n
    for c in collections:
        raw = bytes(c.Metric)
        pos = cache.get(raw)
        if pos is None:
            pos = cache[raw] = position(raw)
        v = c.Value
        if v is not None and not math.isfinite(v):
            raise MalformedResponse(f"a Value is {v!r}, not a finite number")
        values[pos] = v
    return values


def paged_request(kwargs: dict[str, Any], groupings: Sequence[str], next_token: str | None) -> dict[str, Any]:
    """A request's keyword arguments with its groupings and the page to continue from."""
    if groupings:
        kwargs["Groupings"] = list(groupings)
    if next_token:
        kwargs["NextToken"] = next_token
    return kwargs


def ref_id(v: Any, field: str) -> str | None:
    """The ID of a reference object (``{"Id", "Arn"}``; the ARN's last part where no Id)."""
    if v is None:
        return None
    if isinstance(v, Mapping):
        ident = v.get("Id")
        if ident is None and (arn := v.get("Arn")):
            ident = str(arn).rsplit("/", 1)[-1]
        if ident is not None and not isinstance(ident, str):
            raise MalformedResponse(f"{field}.Id is not a string")
        return ident
    raise MalformedResponse(f"{field} is not an object")
