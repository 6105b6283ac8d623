"""Prometheus metrics with stable names (see ops/ for the dashboard and alerts)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "collector_api_requests", "Connect API calls by operation and outcome", ["operation", "outcome"]
)
THROTTLES = Counter(
    "collector_api_throttles", "Connect API calls answered 429", ["account", "region", "operation"]
)
RETRIES = Counter("collector_api_retries", "Connect API calls retried", ["operation", "reason"])
ROWS_WRITTEN = Counter("collector_rows_written", "metric rows written (one per dimension group)")
VALUES_WRITTEN = Counter("collector_values_written", "metric values written")
SLICES = Counter("collector_slices", "slices by outcome", ["outcome"])
CHANNEL_DEPTH = Gauge("collector_channel_depth", "completed slices waiting for the writer")
LAG = Gauge(
    "collector_collection_lag_seconds",
    "now minus the end of the newest collected slice",
    ["connect_instance", "profile"],
)
GAPS = Counter(
    "collector_gaps", "slices that aged out of the lookback before collection", ["connect_instance", "profile"]
)
RUN_DURATION = Histogram(
    "collector_run_duration_seconds", "collection run durations", ["kind", "status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
RUNS = Counter("collector_runs", "collection runs finished", ["kind", "status"])
SHARDS_UNSERVED = Gauge(
    "collector_shards_unserved",
    "(account, Region) shards a replica's config lists that no live replica's config can serve",
)
LEASES_HELD = Gauge("collector_leases_held", "(account, Region) shards this replica holds")
TAKEOVERS = Counter("collector_lease_takeovers", "shards claimed from a replica that had not released them")
FENCED = Counter("collector_fenced_batches", "batches refused because their lease had been lost")
# real time: the latest queue snapshot (see collector.apis.current.gauges), and when each
# (instance, profile)'s latest snapshot was taken
LIVE_LABELS = ["connect_instance", "profile", "queue", "channel"]
LIVE_IN_QUEUE = Gauge("collector_live_contacts_in_queue", "contacts waiting in queue (latest snapshot)", LIVE_LABELS)
LIVE_OLDEST = Gauge("collector_live_oldest_contact_age_seconds",
                    "age of the oldest contact in queue (latest snapshot)", LIVE_LABELS)
LIVE_AGENTS = Gauge("collector_live_agents", "agents by state (latest snapshot)", [*LIVE_LABELS, "state"])
LIVE_DROPPED = Counter("collector_live_series_dropped", "live gauge series not created: over max_gauge_series")
LIVE_SNAPSHOT_AT = Gauge("collector_live_snapshot_timestamp_seconds",
                         "when the latest stored snapshot was taken (the API's snapshot time, Unix seconds)",
                         ["connect_instance", "profile"])


class Meter:
    """The request, retry and throttle counters one family of calls updates (see retry.py)."""

    def __init__(self, requests: Counter, retries: Counter, throttles: Counter | None = None) -> None:
        self.requests, self.retries, self.throttles = requests, retries, throttles


API_METER = Meter(REQUESTS, RETRIES, THROTTLES)
DB_METER = Meter(
    Counter("collector_db_requests", "Postgres writes by operation and outcome", ["operation", "outcome"]),
    Counter("collector_db_retries", "Postgres writes retried", ["operation", "reason"]),
)  # Postgres does not throttle
