-- kpi_interval reads the stored arrays directly, like historical_metrics_wide (013):
-- kpi_layout says, per metric set, where each KPI input sits in ``vals``. Same columns
-- and values as 011.
CREATE VIEW kpi_layout AS
SELECT metric_set_id,
       max(ord) FILTER (WHERE metric_name = 'CONTACTS_QUEUED' AND metric_filters IS NULL)::int     AS contacts_queued,
       max(ord) FILTER (WHERE metric_name = 'CONTACTS_HANDLED' AND metric_filters IS NULL)::int    AS contacts_handled,
       max(ord) FILTER (WHERE metric_name = 'CONTACTS_ABANDONED' AND metric_filters IS NULL)::int  AS contacts_abandoned,
       max(ord) FILTER (WHERE metric_name IN ('HANDLE_TIME', 'AVG_HANDLE_TIME')
                          AND metric_filters IS NULL)::int                                         AS avg_handle_time,
       max(ord) FILTER (WHERE metric_name IN ('QUEUE_ANSWER_TIME', 'AVG_QUEUE_ANSWER_TIME')
                          AND metric_filters IS NULL)::int                                         AS avg_answer_time,
       max(ord) FILTER (WHERE metric_name = 'ABANDONMENT_RATE' AND metric_filters IS NULL)::int    AS abandonment_rate,
       max(ord) FILTER (WHERE metric_name IN ('OCCUPANCY', 'AGENT_OCCUPANCY'))::int                AS occupancy,
       max(ord) FILTER (WHERE metric_name = 'SUM_CONTACT_TIME_AGENT')::int                         AS contact_time_agent,
       max(ord) FILTER (WHERE metric_name = 'SUM_IDLE_TIME_AGENT')::int                            AS idle_time_agent,
       array_agg(ord::int ORDER BY ord)
           FILTER (WHERE metric_name = 'SERVICE_LEVEL' AND metric_filters IS NULL)                 AS sl_ords,
       array_agg(CASE WHEN threshold_comparison = 'LTE' THEN '<=' ELSE '' END || threshold_value::bigint::text
                 ORDER BY ord)
           FILTER (WHERE metric_name = 'SERVICE_LEVEL' AND metric_filters IS NULL)                 AS sl_keys,
       array_agg(ord::int ORDER BY ord)
           FILTER (WHERE metric_name = 'SUM_CONTACTS_ANSWERED_IN_X' AND metric_filters IS NULL)    AS answered_ords,
       array_agg(CASE WHEN threshold_comparison = 'LTE' THEN '<=' ELSE '' END || threshold_value::bigint::text
                 ORDER BY ord)
           FILTER (WHERE metric_name = 'SUM_CONTACTS_ANSWERED_IN_X' AND metric_filters IS NULL)    AS answered_keys
FROM metric_set_members
GROUP BY metric_set_id;

CREATE OR REPLACE VIEW kpi_interval AS
SELECT v.instance_ref, v.profile_id, v.slice_start, v.slice_seconds, v.dims_id,
       max(v.vals[l.contacts_queued])    AS contacts_queued,
       max(v.vals[l.contacts_handled])   AS contacts_handled,
       max(v.vals[l.contacts_abandoned]) AS contacts_abandoned,
       max(v.vals[l.avg_handle_time])    AS avg_handle_time,
       max(v.vals[l.avg_answer_time])    AS avg_answer_time,
       max(v.vals[l.abandonment_rate])   AS abandonment_rate,
       max(v.vals[l.occupancy])          AS occupancy,
       max(v.vals[l.contact_time_agent]) AS contact_time_agent,
       max(v.vals[l.idle_time_agent])    AS idle_time_agent,
       collector_jsonb_merge((SELECT jsonb_object_agg(k, v.vals[o])
                              FROM unnest(l.sl_ords, l.sl_keys) AS s(o, k)))            AS service_level,
       collector_jsonb_merge((SELECT jsonb_object_agg(k, v.vals[o])
                              FROM unnest(l.answered_ords, l.answered_keys) AS s(o, k)
                              WHERE v.vals[o] IS NOT NULL))                            AS answered_in,
       max(v.collected_at)               AS collected_at
FROM metric_values v
JOIN kpi_layout l ON l.metric_set_id = v.metric_set_id
GROUP BY v.instance_ref, v.profile_id, v.slice_start, v.slice_seconds, v.dims_id;
