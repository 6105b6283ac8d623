"""Walking a profile's calendar (:class:`collector.ports.Calendar`): boundaries, slices, runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collector.ports import Calendar, MetricApi

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class UtcCalendar:
    """Slices of a fixed length, on multiples of it since the epoch (UTC)."""

    seconds: int

    @property
    def lengths(self) -> tuple[int, int]:
        return (self.seconds, self.seconds)

    def floor(self, t: datetime) -> datetime:
        e = int(t.timestamp())
        return datetime.fromtimestamp(e - e % self.seconds, UTC)

    def next(self, boundary: datetime) -> datetime:
        return datetime.fromtimestamp(int(boundary.timestamp()) + self.seconds, UTC)


def ceil(cal: Calendar, t: datetime) -> datetime:
    b = cal.floor(t)
    return b if b == t else cal.next(b)


def tile(cal: Calendar, start: datetime, end: datetime) -> list[Span]:
    """The slices of [start, end); ``start`` is a boundary."""
    out: list[Span] = []
    b = start
    while b < end:
        n = cal.next(b)
        out.append((b, n))
        b = n
    return out


def runs_of(spans: Sequence[Span]) -> list[Span]:
    """Slices -> maximal ranges of consecutive slices."""
    out: list[Span] = []
    for s, e in sorted(set(spans)):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def lookback_edge(api: MetricApi, now: datetime, margin: int) -> datetime:
    """The earliest slice the API still serves, ``margin`` seconds inside its lookback."""
    return ceil(api.calendar, now - timedelta(seconds=api.lookback - margin))
