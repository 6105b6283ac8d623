"""What the code expects of the migrated schema (checked by a test after migrating)."""

from __future__ import annotations

from typing import Final

# The public query surface: view -> [(column, type)] in order.
HISTORICAL_METRICS: Final = [
    ("instance_id", "text"),
    ("interval_start", "timestamp with time zone"),
    ("interval_end", "timestamp with time zone"),
    ("queue_id", "text"),
    ("channel", "text"),
    ("routing_profile_id", "text"),
    ("agent_status_id", "text"),
    ("routing_step_expression", "text"),
    ("subtype", "text"),
    ("validation_test_type", "text"),
    ("metric_name", "text"),
    ("statistic", "text"),
    ("unit", "text"),
    ("threshold_value", "double precision"),
    ("value", "double precision"),
    ("profile", "text"),
    ("collected_at", "timestamp with time zone"),
    # GetMetricDataV2 (migration 007); NULL / 'v1' on v1 rows
    ("api", "text"),
    ("agent_id", "text"),
    ("dimensions", "jsonb"),
    ("threshold_comparison", "text"),
    ("metric_filters", "jsonb"),
]

WIDE_METRIC_COLUMNS: Final = [
    "abandon_time", "after_contact_work_time", "api_contacts_handled", "callback_contacts_handled",
    "contacts_abandoned", "contacts_agent_hung_up_first", "contacts_consulted", "contacts_handled",
    "contacts_handled_incoming", "contacts_handled_outbound", "contacts_hold_abandons",
    "contacts_missed", "contacts_queued", "contacts_transferred_in",
    "contacts_transferred_in_from_queue", "contacts_transferred_out",
    "contacts_transferred_out_from_queue", "handle_time", "hold_time", "interaction_and_hold_time",
    "interaction_time", "occupancy", "queue_answer_time", "queued_time",
]

HISTORICAL_METRICS_WIDE: Final = [
    *[(c, t) for c, t in HISTORICAL_METRICS[:10]],
    ("profile", "text"),
    ("api", "text"),
    ("agent_id", "text"),
    ("dimensions", "jsonb"),
    *[(c, "double precision") for c in WIDE_METRIC_COLUMNS],
    ("service_level", "jsonb"),
    ("v2_metrics", "jsonb"),
    ("collected_at", "timestamp with time zone"),
]

# Tables the writer and the bookkeeping touch, with the columns they use.
TABLES: Final = {
    "metric_values": {"slice_start", "collected_at", "instance_ref", "dims_id", "metric_set_id",
                      "slice_seconds", "profile_id", "vals"},
    "collected_slices": {"instance_ref", "slice_start", "slice_seconds", "profile_id", "rows",
                         "run_id", "first_collected_at", "last_collected_at", "times_collected", "ordered_at"},
    "collection_runs": {"id", "requested_by", "profile", "range_start", "range_end", "instances",
                        "status", "slices_total", "slices_done", "slices_failed", "rows_written",
                        "values_written", "requests", "retries", "throttles", "errors",
                        "created_at", "started_at", "finished_at", "resumed_from", "owner", "adopted_at"},
    "watermarks": {"instance_ref", "profile_id", "slice_seconds", "frontier", "updated_at"},
    "run_parts": {"run_id", "account", "region", "status", "claimed_by", "updated_at",
                  "slices_total", "slices_done", "rows_written", "values_written"},
    "replicas": {"id", "api_url", "started_at", "heartbeat_at", "serves"},
    "shard_leases": {"account", "region", "owner", "generation", "expires_at", "acquired_at", "takeovers"},
    "collection_gaps": {"instance_ref", "profile_id", "slice_start", "slice_seconds", "reason",
                        "recorded_at"},
    "instances": {"ref", "instance_id", "region", "account", "arn", "alias", "first_seen", "name"},
    "queues": {"instance_ref", "queue_id", "arn", "name", "queue_type", "seen_at"},
    "dimension_sets": {"id", "key", "queue_id", "channel", "routing_profile_id", "agent_status_id",
                       "routing_step_expression", "subtype", "validation_test_type", "agent_id", "dimensions"},
    "metric_sets": {"id", "signature"},
    "metric_set_members": {"metric_set_id", "ord", "metric_name", "statistic", "unit", "threshold_value",
                           "api", "threshold_comparison", "metric_filters"},
    "agents": {"instance_ref", "agent_id", "arn", "username", "first_name", "last_name", "seen_at",
               "routing_profile_id", "hierarchy_group_id"},
    "routing_profiles": {"instance_ref", "routing_profile_id", "arn", "name", "seen_at"},
    "hierarchy_groups": {"instance_ref", "group_id", "arn", "name", "level", "seen_at"},
    "profiles": {"id", "name", "api", "interval", "interval_seconds", "period", "time_zone", "registered_at"},
}

# The KPI views (migration 011): view -> columns in order (documented in the README).
KPI_VIEWS: Final = {
    "kpi_queue_interval": [
        "instance_id", "instance_name", "profile", "api", "time_zone", "interval_start", "interval_end",
        "local_date", "queue_id", "queue_name", "channel", "routing_profile_id", "routing_profile_name",
        "contacts_queued", "contacts_handled", "contacts_abandoned", "service_level", "answered_in",
        "avg_handle_time", "avg_answer_time", "abandonment_rate", "occupancy", "collected_at",
    ],
    "kpi_queue_daily": [
        "instance_id", "instance_name", "profile", "api", "time_zone", "local_date", "period_start",
        "period_end", "intervals", "queue_id", "queue_name", "channel", "routing_profile_id",
        "routing_profile_name", "contacts_queued", "contacts_handled", "contacts_abandoned", "service_level",
        "avg_handle_time", "avg_answer_time", "abandonment_rate", "occupancy",
    ],
    "kpi_queue_weekly": [
        "instance_id", "instance_name", "profile", "api", "time_zone", "local_week", "period_start",
        "period_end", "intervals", "queue_id", "queue_name", "channel", "routing_profile_id",
        "routing_profile_name", "contacts_queued", "contacts_handled", "contacts_abandoned", "service_level",
        "avg_handle_time", "avg_answer_time", "abandonment_rate", "occupancy",
    ],
    "kpi_agent_interval": [
        "instance_id", "instance_name", "profile", "api", "time_zone", "interval_start", "interval_end",
        "local_date", "agent_id", "username", "agent_name", "routing_profile_id", "routing_profile_name",
        "hierarchy_group_id", "hierarchy_group_name", "queue_id", "queue_name", "channel", "contacts_handled",
        "avg_handle_time", "occupancy", "contact_time_agent", "idle_time_agent", "collected_at",
    ],
    "kpi_agent_daily": [
        "instance_id", "instance_name", "profile", "api", "time_zone", "local_date", "period_start",
        "period_end", "intervals", "agent_id", "username", "agent_name", "routing_profile_id",
        "routing_profile_name", "hierarchy_group_id", "hierarchy_group_name", "queue_id", "queue_name",
        "channel", "contacts_handled", "avg_handle_time", "occupancy",
    ],
    "collection_problems": [
        "kind", "instance_id", "profile", "interval_start", "interval_end", "reason", "run_id", "recorded_at",
    ],
}
