-- The queue roll-ups without per-row jsonb arithmetic: each slice's service-level map
-- is unnested into one row per threshold (its counts carried by the first), summed per
-- threshold, and folded back into one map per group. Same columns and values as 011.

CREATE OR REPLACE VIEW kpi_queue_daily AS
SELECT instance_id, instance_name, profile, api, time_zone,
       local_date,
       min(period_start)                                                             AS period_start,
       max(period_end)                                                               AS period_end,
       sum(intervals)::int                                                           AS intervals,
       queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
       sum(contacts_queued)                                                          AS contacts_queued,
       sum(contacts_handled)                                                         AS contacts_handled,
       sum(contacts_abandoned)                                                       AS contacts_abandoned,
       jsonb_object_agg(threshold, round((100.0 * sl_num / NULLIF(sl_den, 0))::numeric, 2))
           FILTER (WHERE threshold IS NOT NULL)                                      AS service_level,
       round((sum(aht_num) / NULLIF(sum(aht_den), 0))::numeric, 3)::float8            AS avg_handle_time,
       round((sum(asa_num) / NULLIF(sum(asa_den), 0))::numeric, 3)::float8            AS avg_answer_time,
       round((100.0 * sum(contacts_abandoned) / NULLIF(sum(ab_den), 0))::numeric, 2)::float8
                                                                                     AS abandonment_rate,
       CASE WHEN sum(intervals) = 1 THEN max(occupancy) END                          AS occupancy
FROM (
    SELECT instance_id, instance_name, profile, api, time_zone,
           local_date                                                             AS local_date,
           queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
           e.threshold,
           -- each slice's counts are carried by its first threshold row (or its only row)
           count(*) FILTER (WHERE e.n IS NULL OR e.n = 1)                            AS intervals,
           min(interval_start)                                                       AS period_start,
           max(interval_end)                                                         AS period_end,
           sum(contacts_queued) FILTER (WHERE e.n IS NULL OR e.n = 1)                AS contacts_queued,
           sum(contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1)               AS contacts_handled,
           sum(contacts_abandoned) FILTER (WHERE e.n IS NULL OR e.n = 1)             AS contacts_abandoned,
           sum(avg_handle_time * contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1) AS aht_num,
           sum(contacts_handled) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND avg_handle_time IS NOT NULL) AS aht_den,
           sum(avg_answer_time * contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1) AS asa_num,
           sum(contacts_handled) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND avg_answer_time IS NOT NULL) AS asa_den,
           sum(contacts_queued) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND contacts_abandoned IS NOT NULL) AS ab_den,
           max(occupancy) FILTER (WHERE e.n IS NULL OR e.n = 1)                      AS occupancy,
           -- service level: contacts answered within X (V2's count where collected, else
           -- the percentage's numerator) over contacts queued
           sum(COALESCE((answered_in->>e.threshold)::float8, e.value::float8 * contacts_queued / 100.0)) AS sl_num,
           sum(contacts_queued) FILTER (WHERE COALESCE(answered_in->>e.threshold, e.value) IS NOT NULL) AS sl_den
    FROM kpi_queue_interval k
    LEFT JOIN LATERAL jsonb_each_text(k.service_level) WITH ORDINALITY AS e(threshold, value, n) ON true
    GROUP BY instance_id, instance_name, profile, api, time_zone, local_date,
             queue_id, queue_name, channel, routing_profile_id, routing_profile_name, e.threshold
) t
GROUP BY instance_id, instance_name, profile, api, time_zone, local_date, queue_id, queue_name, channel, routing_profile_id, routing_profile_name;

CREATE OR REPLACE VIEW kpi_queue_weekly AS
SELECT instance_id, instance_name, profile, api, time_zone,
       local_week,
       min(period_start)                                                             AS period_start,
       max(period_end)                                                               AS period_end,
       sum(intervals)::int                                                           AS intervals,
       queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
       sum(contacts_queued)                                                          AS contacts_queued,
       sum(contacts_handled)                                                         AS contacts_handled,
       sum(contacts_abandoned)                                                       AS contacts_abandoned,
       jsonb_object_agg(threshold, round((100.0 * sl_num / NULLIF(sl_den, 0))::numeric, 2))
           FILTER (WHERE threshold IS NOT NULL)                                      AS service_level,
       round((sum(aht_num) / NULLIF(sum(aht_den), 0))::numeric, 3)::float8            AS avg_handle_time,
       round((sum(asa_num) / NULLIF(sum(asa_den), 0))::numeric, 3)::float8            AS avg_answer_time,
       round((100.0 * sum(contacts_abandoned) / NULLIF(sum(ab_den), 0))::numeric, 2)::float8
                                                                                     AS abandonment_rate,
       CASE WHEN sum(intervals) = 1 THEN max(occupancy) END                          AS occupancy
FROM (
    SELECT instance_id, instance_name, profile, api, time_zone,
           date_trunc('week', local_date)::date                                                             AS local_week,
           queue_id, queue_name, channel, routing_profile_id, routing_profile_name,
           e.threshold,
           -- each slice's counts are carried by its first threshold row (or its only row)
           count(*) FILTER (WHERE e.n IS NULL OR e.n = 1)                            AS intervals,
           min(interval_start)                                                       AS period_start,
           max(interval_end)                                                         AS period_end,
           sum(contacts_queued) FILTER (WHERE e.n IS NULL OR e.n = 1)                AS contacts_queued,
           sum(contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1)               AS contacts_handled,
           sum(contacts_abandoned) FILTER (WHERE e.n IS NULL OR e.n = 1)             AS contacts_abandoned,
           sum(avg_handle_time * contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1) AS aht_num,
           sum(contacts_handled) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND avg_handle_time IS NOT NULL) AS aht_den,
           sum(avg_answer_time * contacts_handled) FILTER (WHERE e.n IS NULL OR e.n = 1) AS asa_num,
           sum(contacts_handled) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND avg_answer_time IS NOT NULL) AS asa_den,
           sum(contacts_queued) FILTER (WHERE (e.n IS NULL OR e.n = 1) AND contacts_abandoned IS NOT NULL) AS ab_den,
           max(occupancy) FILTER (WHERE e.n IS NULL OR e.n = 1)                      AS occupancy,
           -- service level: contacts answered within X (V2's count where collected, else
           -- the percentage's numerator) over contacts queued
           sum(COALESCE((answered_in->>e.threshold)::float8, e.value::float8 * contacts_queued / 100.0)) AS sl_num,
           sum(contacts_queued) FILTER (WHERE COALESCE(answered_in->>e.threshold, e.value) IS NOT NULL) AS sl_den
    FROM kpi_queue_interval k
    LEFT JOIN LATERAL jsonb_each_text(k.service_level) WITH ORDINALITY AS e(threshold, value, n) ON true
    GROUP BY instance_id, instance_name, profile, api, time_zone, date_trunc('week', local_date)::date,
             queue_id, queue_name, channel, routing_profile_id, routing_profile_name, e.threshold
) t
GROUP BY instance_id, instance_name, profile, api, time_zone, local_week, queue_id, queue_name, channel, routing_profile_id, routing_profile_name;
