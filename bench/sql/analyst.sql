-- The analyst bench's queries (bench/analyst.py), each timed on the same data.

-- name: hourly_sum_long
-- The baseline: an hourly sum over the long view.
SELECT queue_id, date_trunc('hour', interval_start) AS hour, sum(value) AS contacts_handled
FROM historical_metrics
WHERE metric_name = 'CONTACTS_HANDLED'
GROUP BY 1, 2;

-- name: service_level_per_day_wide
-- Service level at 20 s per queue per day from historical_metrics_wide (weighted by contacts queued).
SELECT instance_id, queue_id, (interval_start AT TIME ZONE 'UTC')::date AS day,
       sum((service_level->>'20')::float8 * contacts_queued) / NULLIF(sum(contacts_queued), 0) AS sl20
FROM historical_metrics_wide
GROUP BY 1, 2, 3;

-- name: service_level_per_day_kpi
-- The same from the KPI view.
SELECT instance_id, queue_id, local_date, service_level->>'20' AS sl20
FROM kpi_queue_daily;
