-- The questions a contact-center analyst asks, one SELECT each over the KPI views
-- (README "KPI views"). Each is run by tests/test_examples.py against the simulator's
-- data. Replace the profile names with yours; "yesterday" is the profile's local day.

-- name: service_level_per_queue_yesterday
-- Service level per queue and channel for yesterday (local day of the profile's time
-- zone), at 20 and 60 seconds, recomputed from the day's counts.
SELECT d.instance_name, d.queue_name, d.channel, d.contacts_queued,
       (d.service_level->>'20')::float8 AS service_level_20,
       (d.service_level->>'60')::float8 AS service_level_60
FROM kpi_queue_daily d
WHERE d.profile = 'queues_15m'
  AND d.local_date = (now() AT TIME ZONE d.time_zone)::date - 1
ORDER BY d.instance_name, d.queue_name, d.channel;

-- name: handle_time_per_hour
-- Average handle time per queue and local hour over the last day, weighted by the
-- contacts handled in each slice.
SELECT k.queue_name,
       date_trunc('hour', k.interval_start AT TIME ZONE k.time_zone) AS local_hour,
       sum(k.contacts_handled) AS contacts_handled,
       round((sum(k.avg_handle_time * k.contacts_handled)
              / NULLIF(sum(k.contacts_handled) FILTER (WHERE k.avg_handle_time IS NOT NULL), 0))::numeric, 1)
           AS avg_handle_time_s
FROM kpi_queue_interval k
WHERE k.profile = 'queues_15m' AND k.interval_start >= now() - interval '1 day'
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: abandonment_per_queue
-- Abandonment per queue over the last 7 local days: abandoned over queued.
SELECT d.queue_name, sum(d.contacts_queued) AS contacts_queued, sum(d.contacts_abandoned) AS contacts_abandoned,
       round((100.0 * sum(d.contacts_abandoned) / NULLIF(sum(d.contacts_queued), 0))::numeric, 2) AS abandonment_rate
FROM kpi_queue_daily d
WHERE d.profile = 'queues_15m' AND d.local_date >= (now() AT TIME ZONE d.time_zone)::date - 7
GROUP BY d.queue_name
ORDER BY abandonment_rate DESC NULLS LAST, d.queue_name;

-- name: contacts_and_occupancy_per_agent_per_day
-- Contacts handled, average handle time and occupancy per agent and local day.
SELECT a.local_date, a.username, a.agent_name, a.routing_profile_name,
       a.contacts_handled, a.avg_handle_time, a.occupancy
FROM kpi_agent_daily a
WHERE a.profile = 'agents_15m' AND a.local_date >= (now() AT TIME ZONE a.time_zone)::date - 7
ORDER BY a.local_date, a.username;

-- name: busiest_half_hour_of_the_week
-- The local half hour of the week (day of week, time of day) with the most contacts
-- queued, summed over every queue and week collected.
SELECT to_char(k.interval_start AT TIME ZONE k.time_zone, 'Dy') AS day_of_week,
       (date_trunc('hour', k.interval_start AT TIME ZONE k.time_zone)
        + (extract(minute FROM k.interval_start AT TIME ZONE k.time_zone)::int / 30) * interval '30 minutes')::time
           AS half_hour,
       sum(k.contacts_queued) AS contacts_queued
FROM kpi_queue_interval k
WHERE k.profile = 'queues_15m'
GROUP BY 1, 2
ORDER BY contacts_queued DESC NULLS LAST, 1, 2
LIMIT 1;

-- name: missing_slices
-- Is my data complete? Every failed slice (with its reason) and every gap.
SELECT p.kind, p.instance_id, p.profile, p.interval_start, p.interval_end, p.reason, p.run_id
FROM collection_problems p
ORDER BY p.interval_start DESC, p.instance_id
LIMIT 100;
