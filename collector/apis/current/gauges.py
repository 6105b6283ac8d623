"""Prometheus gauges of the latest queue snapshot: contacts in queue, the oldest
contact's age and agents by state, per instance, queue and channel, set as each snapshot
is stored. A cap on the number of series (``[realtime] max_gauge_series``) keeps a large
fleet from flooding Prometheus: series past it are not created (counted in
``collector_live_series_dropped``, warned once); the tables keep everything. The gauges
themselves are defined with the others in :mod:`collector.observability`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog
from prometheus_client import Gauge

from collector.apis.current.model import Dims, MetricSet
from collector.observability import LIVE_AGENTS as AGENTS
from collector.observability import LIVE_DROPPED as DROPPED
from collector.observability import LIVE_IN_QUEUE as IN_QUEUE
from collector.observability import LIVE_OLDEST as OLDEST
from collector.observability import LIVE_SNAPSHOT_AT

log = structlog.get_logger("collector.live")

# metric -> (gauge, state label or None)
_GAUGES: dict[str, tuple[Gauge, str | None]] = {
    "CONTACTS_IN_QUEUE": (IN_QUEUE, None),
    "OLDEST_CONTACT_AGE": (OLDEST, None),
    "AGENTS_AVAILABLE": (AGENTS, "available"),
    "AGENTS_ON_CONTACT": (AGENTS, "on_contact"),
    "AGENTS_AFTER_CONTACT_WORK": (AGENTS, "after_contact_work"),
    "AGENTS_ONLINE": (AGENTS, "online"),
    "AGENTS_STAFFED": (AGENTS, "staffed"),
    "AGENTS_NON_PRODUCTIVE": (AGENTS, "non_productive"),
    "AGENTS_ERROR": (AGENTS, "error"),
}

Series = tuple[Gauge, tuple[str, ...]]


class LiveGauges:
    """The gauges' series, capped; each (instance, profile)'s series follow its latest snapshot
    (a queue that no longer shows is removed)."""

    def __init__(self, cap: int = 5000) -> None:
        self.cap = cap
        self._by_source: dict[tuple[str, str], set[Series]] = {}
        self._count = 0
        self._warned = False

    def taken(self, instance: str, profile: str, at: datetime) -> None:
        """The latest stored snapshot of (instance, profile) was taken ``at``."""
        LIVE_SNAPSHOT_AT.labels(instance, profile).set(at.timestamp())

    def publish(self, instance: str, profile: str, metrics: MetricSet,
                rows: Sequence[tuple[Dims, list[float | None]]], at: datetime) -> None:
        self.taken(instance, profile, at)
        wanted: dict[Series, float | None] = {}
        for dims, values in rows:
            if any(d is not None for d in dims[2:]):
                continue  # grouped finer than queue and channel: the labels could not tell the rows apart
            base = (instance, profile, dims[0] or "", dims[1] or "")
            for (name, _unit), v in zip(metrics, values, strict=True):
                spec = _GAUGES.get(name)
                if spec is not None:
                    gauge, state = spec
                    labels: tuple[str, ...] = base if state is None else (*base, state)
                    wanted[(gauge, labels)] = v
        old = self._by_source.get((instance, profile), set())
        for gauge, labels in old - wanted.keys():  # gone from the snapshot: room for others first
            gauge.remove(*labels)
            self._count -= 1
        seen: set[Series] = set()
        for series, v in wanted.items():
            if series not in old:
                if self._count >= self.cap:
                    DROPPED.inc()
                    if not self._warned:
                        self._warned = True
                        log.warning("live_gauge_cap_reached", cap=self.cap,
                                    hint="raise [realtime] max_gauge_series, or group by fewer dimensions")
                    continue
                self._count += 1
            seen.add(series)
            series[0].labels(*series[1]).set(float("nan") if v is None else v)
        self._by_source[(instance, profile)] = seen


GAUGES = LiveGauges()
