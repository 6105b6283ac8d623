-- KPI views: what an analyst asks, one SELECT each, for v1 and V2 profiles alike.
-- (The README's "KPI views" section documents each column and the definition it follows.)
--
--  kpi_interval        per collected slice and dimension group: the KPI inputs (internal)
--  kpi_queue_interval  per queue (and channel / routing profile where grouped), per slice
--  kpi_queue_daily     the same rolled up to the local day of the profile's time zone
--  kpi_queue_weekly    ... and to the local week (starting Monday)
--  kpi_agent_interval  per agent (V2 profiles grouped by AGENT), per slice
--  kpi_agent_daily     the same rolled up to the local day
--  collection_problems failed slices (with the run's reason) and gaps, one row each
--
-- Service level has one shape for both APIs: a jsonb map from the threshold to the
-- percentage, "<seconds>" for "less than" (v1's only comparison, V2's LT) and
-- "<=<seconds>" for V2's LTE: {"20": 81.5, "60": 97.0, "<=60": 97.2}.

-- Sum jsonb maps of numbers key by key (NULL maps count as empty).
CREATE FUNCTION collector_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE
        (SELECT jsonb_object_agg(k, COALESCE((a->>k)::float8, 0) + COALESCE((b->>k)::float8, 0))
         FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) AS keys(k)) END
$$;

CREATE AGGREGATE collector_jsonb_sum(jsonb) (SFUNC = collector_jsonb_add, STYPE = jsonb);

-- 100 * num / den key by key, rounded to 2 decimals (NULL where den is 0 or missing).
CREATE FUNCTION collector_jsonb_pct(num jsonb, den jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(k, round((100.0 * (num->>k)::float8 / NULLIF((den->>k)::float8, 0))::numeric, 2))
    FROM jsonb_object_keys(num) AS keys(k)
$$;

-- One slice's service-level numerators and weights: per threshold, the contacts answered
-- within it (V2 SUM_CONTACTS_ANSWERED_IN_X where collected, else service level x queued / 100)
-- and the contacts queued.
CREATE FUNCTION collector_sl_num(sl jsonb, answered jsonb, queued float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(k, COALESCE((answered->>k)::float8, (sl->>k)::float8 * queued / 100.0))
    FROM jsonb_object_keys(COALESCE(sl, '{}') || COALESCE(answered, '{}')) AS keys(k)
    WHERE queued IS NOT NULL AND COALESCE((answered->>k)::float8, (sl->>k)::float8) IS NOT NULL
$$;

CREATE FUNCTION collector_sl_den(sl jsonb, answered jsonb, queued float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(k, queued)
    FROM jsonb_object_keys(COALESCE(sl, '{}') || COALESCE(answered, '{}')) AS keys(k)
    WHERE queued IS NOT NULL AND COALESCE((answered->>k)::float8, (sl->>k)::float8) IS NOT NULL
$$;

CREATE VIEW kpi_interval AS
SELECT v.instance_ref, v.profile_id, v.slice_start, v.slice_seconds, v.dims_id,
       max(u.value) FILTER (WHERE m.metric_name = 'CONTACTS_QUEUED' AND m.metric_filters IS NULL)     AS contacts_queued,
       max(u.value) FILTER (WHERE m.metric_name = 'CONTACTS_HANDLED' AND m.metric_filters IS NULL)    AS contacts_handled,
       max(u.value) FILTER (WHERE m.metric_name = 'CONTACTS_ABANDONED' AND m.metric_filters IS NULL)  AS contacts_abandoned,
       max(u.value) FILTER (WHERE m.metric_name IN ('HANDLE_TIME', 'AVG_HANDLE_TIME')
                              AND m.metric_filters IS NULL)                                         AS avg_handle_time,
       max(u.value) FILTER (WHERE m.metric_name IN ('QUEUE_ANSWER_TIME', 'AVG_QUEUE_ANSWER_TIME')
                              AND m.metric_filters IS NULL)                                         AS avg_answer_time,
       max(u.value) FILTER (WHERE m.metric_name = 'ABANDONMENT_RATE' AND m.metric_filters IS NULL)    AS abandonment_rate,
       max(u.value) FILTER (WHERE m.metric_name IN ('OCCUPANCY', 'AGENT_OCCUPANCY'))                  AS occupancy,
       max(u.value) FILTER (WHERE m.metric_name = 'SUM_CONTACT_TIME_AGENT')                           AS contact_time_agent,
       max(u.value) FILTER (WHERE m.metric_name = 'SUM_IDLE_TIME_AGENT')                              AS idle_time_agent,
       jsonb_object_agg(CASE WHEN m.threshold_comparison = 'LTE' THEN '<=' ELSE '' END
                        || m.threshold_value::bigint::text, u.value)
           FILTER (WHERE m.metric_name = 'SERVICE_LEVEL' AND m.metric_filters IS NULL)              AS service_level,
       jsonb_object_agg(CASE WHEN m.threshold_comparison = 'LTE' THEN '<=' ELSE '' END
                        || m.threshold_value::bigint::text, u.value)
           FILTER (WHERE m.metric_name = 'SUM_CONTACTS_ANSWERED_IN_X' AND m.metric_filters IS NULL
                     AND u.value IS NOT NULL)                                                       AS answered_in,
       max(v.collected_at)                                                                          AS collected_at
FROM metric_values v
CROSS JOIN LATERAL unnest(v.vals) WITH ORDINALITY AS u(value, ord)
JOIN metric_set_members m ON m.metric_set_id = v.metric_set_id AND m.ord = u.ord
GROUP BY v.instance_ref, v.profile_id, v.slice_start, v.slice_seconds, v.dims_id;

CREATE VIEW kpi_queue_interval AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)                           AS instance_name,
       p.name                                                             AS profile,
       p.api,
       COALESCE(p.time_zone, 'UTC')                                       AS time_zone,
       k.slice_start                                                      AS interval_start,
       k.slice_start + make_interval(secs => k.slice_seconds)             AS interval_end,
       (k.slice_start AT TIME ZONE COALESCE(p.time_zone, 'UTC'))::date    AS local_date,
       d.queue_id,
       q.name                                                             AS queue_name,
       d.channel,
       d.routing_profile_id,
       rp.name                                                            AS routing_profile_name,
       k.contacts_queued,
       k.contacts_handled,
       k.contacts_abandoned,
       k.service_level,
       k.answered_in,
       k.avg_handle_time,
       k.avg_answer_time,
       COALESCE(k.abandonment_rate,
                round((100.0 * k.contacts_abandoned / NULLIF(k.contacts_queued, 0))::numeric, 2)::float8)
                                                                          AS abandonment_rate,
       k.occupancy,
       k.collected_at
FROM kpi_interval k
JOIN instances i        ON i.ref = k.instance_ref
JOIN profiles p         ON p.id = k.profile_id
JOIN dimension_sets d   ON d.id = k.dims_id
LEFT JOIN queues q      ON q.instance_ref = k.instance_ref AND q.queue_id = d.queue_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = k.instance_ref AND rp.routing_profile_id = d.routing_profile_id
WHERE d.queue_id IS NOT NULL AND d.agent_id IS NULL;

-- The roll-ups (daily, weekly): counts add up; averages are weighted by their own
-- denominators (handle and answer time by contacts handled); percentages are
-- recomputed from counts (service level from contacts answered within X over contacts
-- queued, abandonment rate from abandoned over queued). Occupancy is not additive from
-- a queue's slices (its denominator, agent time, is not collected per queue): it is
-- given only where the group is one slice (a 1d profile's day), else NULL.
CREATE VIEW kpi_queue_daily AS
SELECT instance_id, instance_name, profile, api, time_zone,
       local_date,
       min(interval_start)                                                           AS period_start,
       max(interval_end)                                                             AS period_end,
       count(*)::int                                                                 AS intervals,
       queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
       sum(contacts_queued)                                                          AS contacts_queued,
       sum(contacts_handled)                                                         AS contacts_handled,
       sum(contacts_abandoned)                                                       AS contacts_abandoned,
       collector_jsonb_pct(collector_jsonb_sum(collector_sl_num(service_level, answered_in, contacts_queued)),
                           collector_jsonb_sum(collector_sl_den(service_level, answered_in, contacts_queued)))
                                                                                     AS service_level,
       round((sum(avg_handle_time * contacts_handled)
              / NULLIF(sum(contacts_handled) FILTER (WHERE avg_handle_time IS NOT NULL), 0))::numeric, 3)::float8
                                                                                     AS avg_handle_time,
       round((sum(avg_answer_time * contacts_handled)
              / NULLIF(sum(contacts_handled) FILTER (WHERE avg_answer_time IS NOT NULL), 0))::numeric, 3)::float8
                                                                                     AS avg_answer_time,
       round((100.0 * sum(contacts_abandoned)
              / NULLIF(sum(contacts_queued) FILTER (WHERE contacts_abandoned IS NOT NULL), 0))::numeric, 2)::float8
                                                                                     AS abandonment_rate,
       CASE WHEN count(*) = 1 THEN max(occupancy) END                                AS occupancy
FROM kpi_queue_interval
GROUP BY instance_id, instance_name, profile, api, time_zone, local_date,
         queue_id, queue_name, channel, routing_profile_id, routing_profile_name;

CREATE VIEW kpi_queue_weekly AS
SELECT instance_id, instance_name, profile, api, time_zone,
       date_trunc('week', local_date)::date                                          AS local_week,
       min(interval_start)                                                           AS period_start,
       max(interval_end)                                                             AS period_end,
       count(*)::int                                                                 AS intervals,
       queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
       sum(contacts_queued)                                                          AS contacts_queued,
       sum(contacts_handled)                                                         AS contacts_handled,
       sum(contacts_abandoned)                                                       AS contacts_abandoned,
       collector_jsonb_pct(collector_jsonb_sum(collector_sl_num(service_level, answered_in, contacts_queued)),
                           collector_jsonb_sum(collector_sl_den(service_level, answered_in, contacts_queued)))
                                                                                     AS service_level,
       round((sum(avg_handle_time * contacts_handled)
              / NULLIF(sum(contacts_handled) FILTER (WHERE avg_handle_time IS NOT NULL), 0))::numeric, 3)::float8
                                                                                     AS avg_handle_time,
       round((sum(avg_answer_time * contacts_handled)
              / NULLIF(sum(contacts_handled) FILTER (WHERE avg_answer_time IS NOT NULL), 0))::numeric, 3)::float8
                                                                                     AS avg_answer_time,
       round((100.0 * sum(contacts_abandoned)
              / NULLIF(sum(contacts_queued) FILTER (WHERE contacts_abandoned IS NOT NULL), 0))::numeric, 2)::float8
                                                                                     AS abandonment_rate,
       CASE WHEN count(*) = 1 THEN max(occupancy) END                                AS occupancy
FROM kpi_queue_interval
GROUP BY instance_id, instance_name, profile, api, time_zone, date_trunc('week', local_date)::date,
         queue_id, queue_name, channel, routing_profile_id, routing_profile_name;

CREATE VIEW kpi_agent_interval AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)                           AS instance_name,
       p.name                                                             AS profile,
       p.api,
       COALESCE(p.time_zone, 'UTC')                                       AS time_zone,
       k.slice_start                                                      AS interval_start,
       k.slice_start + make_interval(secs => k.slice_seconds)             AS interval_end,
       (k.slice_start AT TIME ZONE COALESCE(p.time_zone, 'UTC'))::date    AS local_date,
       d.agent_id,
       a.username,
       NULLIF(concat_ws(' ', a.first_name, a.last_name), '')              AS agent_name,
       COALESCE(d.routing_profile_id, a.routing_profile_id)               AS routing_profile_id,
       rp.name                                                            AS routing_profile_name,
       a.hierarchy_group_id,
       hg.name                                                            AS hierarchy_group_name,
       d.queue_id,
       q.name                                                             AS queue_name,
       d.channel,
       k.contacts_handled,
       k.avg_handle_time,
       k.occupancy,
       k.contact_time_agent,
       k.idle_time_agent,
       k.collected_at
FROM kpi_interval k
JOIN instances i        ON i.ref = k.instance_ref
JOIN profiles p         ON p.id = k.profile_id
JOIN dimension_sets d   ON d.id = k.dims_id
LEFT JOIN agents a      ON a.instance_ref = k.instance_ref AND a.agent_id = d.agent_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = k.instance_ref
                             AND rp.routing_profile_id = COALESCE(d.routing_profile_id, a.routing_profile_id)
LEFT JOIN hierarchy_groups hg ON hg.instance_ref = k.instance_ref AND hg.group_id = a.hierarchy_group_id
LEFT JOIN queues q      ON q.instance_ref = k.instance_ref AND q.queue_id = d.queue_id
WHERE d.agent_id IS NOT NULL;

-- Occupancy per day: recomputed as contact time / (contact time + idle time) where the
-- profile collects SUM_CONTACT_TIME_AGENT and SUM_IDLE_TIME_AGENT in every slice, the
-- slice's own value where the day is one slice (a 1d profile), else NULL (not additive).
CREATE VIEW kpi_agent_daily AS
SELECT instance_id, instance_name, profile, api, time_zone, local_date,
       min(interval_start)                                                           AS period_start,
       max(interval_end)                                                             AS period_end,
       count(*)::int                                                                 AS intervals,
       agent_id, username, agent_name, routing_profile_id, routing_profile_name,
       hierarchy_group_id, hierarchy_group_name, queue_id, queue_name, channel,
       sum(contacts_handled)                                                         AS contacts_handled,
       round((sum(avg_handle_time * contacts_handled)
              / NULLIF(sum(contacts_handled) FILTER (WHERE avg_handle_time IS NOT NULL), 0))::numeric, 3)::float8
                                                                                     AS avg_handle_time,
       CASE WHEN count(*) = 1 THEN max(occupancy)
            WHEN count(contact_time_agent) = count(*) AND count(idle_time_agent) = count(*)
            THEN round((100.0 * sum(contact_time_agent)
                        / NULLIF(sum(contact_time_agent) + sum(idle_time_agent), 0))::numeric, 2)::float8
       END                                                                           AS occupancy
FROM kpi_agent_interval
GROUP BY instance_id, instance_name, profile, api, time_zone, local_date,
         agent_id, username, agent_name, routing_profile_id, routing_profile_name,
         hierarchy_group_id, hierarchy_group_name, queue_id, queue_name, channel;

-- Is my data complete? One row per slice that failed in a run (with the run's reason)
-- or aged out of the API's history before it was collected (a gap), unless it has been
-- collected since.
CREATE VIEW collection_problems AS
SELECT 'failed'::text                                         AS kind,
       split_part(e->>'slice', '@', 1)                        AS instance_id,
       r.profile,
       split_part(split_part(e->>'slice', '@', 2), '..', 1)::timestamptz AS interval_start,
       split_part(split_part(e->>'slice', '@', 2), '..', 2)::timestamptz AS interval_end,
       e->>'reason'                                           AS reason,
       r.id                                                   AS run_id,
       COALESCE(r.finished_at, r.created_at)                  AS recorded_at
FROM collection_runs r
CROSS JOIN LATERAL jsonb_array_elements(r.errors) AS e
WHERE e ? 'slice'
  AND NOT EXISTS (
      SELECT 1 FROM collected_slices c
      JOIN instances i ON i.ref = c.instance_ref
      JOIN profiles p ON p.id = c.profile_id
      WHERE i.instance_id = split_part(e->>'slice', '@', 1) AND p.name = r.profile
        AND c.slice_start = split_part(split_part(e->>'slice', '@', 2), '..', 1)::timestamptz
        AND c.last_collected_at > COALESCE(r.finished_at, r.created_at))
UNION ALL
SELECT 'gap', i.instance_id, p.name, g.slice_start, g.slice_start + make_interval(secs => g.slice_seconds),
       g.reason, NULL, g.recorded_at
FROM collection_gaps g
JOIN instances i ON i.ref = g.instance_ref
JOIN profiles p ON p.id = g.profile_id;
