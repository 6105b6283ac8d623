-- GetMetricDataV2 rows in the same store and the same views.
--
-- A V2 value is stored like a v1 value: one metric_values row per (instance, slice,
-- profile, dimension group, metric set) holding a float8[] in the metric set's
-- order, so storage per value stays v1's. For V2 the slice is one interval of the
-- profile (its MetricInterval; slice_seconds is the interval's real length, 23 or
-- 25 hours on a DST day). What is new lives in the registries:
--  * metric_set_members: api ('v1'/'v2'), threshold_comparison (LT/LTE/GT) and
--    metric_filters (jsonb [{key, values, negate}]); statistic is NULL for V2.
--  * dimension_sets: agent_id and dimensions (jsonb: the result's whole Dimensions
--    map as returned); the shared columns (queue_id, channel, ...) filled from it.
-- And the resources discovered for filters and joins: agents, routing_profiles,
-- hierarchy_groups.

ALTER TABLE metric_set_members ALTER COLUMN statistic DROP NOT NULL;
ALTER TABLE metric_set_members
    ADD COLUMN api text NOT NULL DEFAULT 'v1' CHECK (api IN ('v1', 'v2')),
    ADD COLUMN threshold_comparison text CHECK (threshold_comparison IN ('LT', 'LTE', 'GT')),
    ADD COLUMN metric_filters jsonb;

ALTER TABLE dimension_sets
    ADD COLUMN agent_id text,
    ADD COLUMN dimensions jsonb;

CREATE TABLE agents (
    instance_ref int  NOT NULL REFERENCES instances(ref),
    agent_id     text NOT NULL,
    arn          text,
    username     text,
    first_name   text,
    last_name    text,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, agent_id)
);

CREATE TABLE routing_profiles (
    instance_ref       int  NOT NULL REFERENCES instances(ref),
    routing_profile_id text NOT NULL,
    arn                text,
    name               text,
    seen_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, routing_profile_id)
);

CREATE TABLE hierarchy_groups (
    instance_ref int  NOT NULL REFERENCES instances(ref),
    group_id     text NOT NULL,
    arn          text,
    name         text,
    level        smallint,  -- 1-5 where known (ListUserHierarchyGroups does not say)
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, group_id)
);

DROP VIEW historical_metrics_wide;
DROP VIEW historical_metrics;

CREATE VIEW historical_metrics AS
SELECT i.instance_id,
       v.slice_start                                           AS interval_start,
       v.slice_start + make_interval(secs => v.slice_seconds)  AS interval_end,
       d.queue_id,
       d.channel,
       d.routing_profile_id,
       d.agent_status_id,
       d.routing_step_expression,
       d.subtype,
       d.validation_test_type,
       m.metric_name,
       m.statistic,
       m.unit,
       m.threshold_value,
       u.value,
       p.name                                                  AS profile,
       v.collected_at,
       m.api,
       d.agent_id,
       d.dimensions,
       COALESCE(m.threshold_comparison,
                CASE WHEN m.threshold_value IS NOT NULL THEN 'LT' END) AS threshold_comparison,
       m.metric_filters
FROM metric_values v
JOIN instances i       ON i.ref = v.instance_ref
JOIN profiles p        ON p.id = v.profile_id
JOIN dimension_sets d  ON d.id = v.dims_id
CROSS JOIN LATERAL unnest(v.vals) WITH ORDINALITY AS u(value, ord)
JOIN metric_set_members m ON m.metric_set_id = v.metric_set_id AND m.ord = u.ord;

-- One row per instance, slice, profile and dimension group; one column per
-- v1 metric (lower-case name). Service levels are one jsonb map column
-- "service_level": {"<threshold seconds>": value, ...}. GetMetricDataV2 values
-- are one jsonb map column "v2_metrics": {"<label>": value, ...}, the label being
-- the metric name, then " <comparison> <threshold>" and " <metric filters json>"
-- where the entry has them (e.g. "SERVICE_LEVEL LT 20").
CREATE VIEW historical_metrics_wide AS
SELECT instance_id, interval_start, interval_end,
       queue_id, channel, routing_profile_id, agent_status_id,
       routing_step_expression, subtype, validation_test_type, profile,
       api, agent_id, dimensions,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'ABANDON_TIME')                        AS abandon_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'AFTER_CONTACT_WORK_TIME')             AS after_contact_work_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'API_CONTACTS_HANDLED')                AS api_contacts_handled,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CALLBACK_CONTACTS_HANDLED')           AS callback_contacts_handled,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_ABANDONED')                  AS contacts_abandoned,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_AGENT_HUNG_UP_FIRST')        AS contacts_agent_hung_up_first,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_CONSULTED')                  AS contacts_consulted,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED')                    AS contacts_handled,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED_INCOMING')           AS contacts_handled_incoming,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED_OUTBOUND')           AS contacts_handled_outbound,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HOLD_ABANDONS')              AS contacts_hold_abandons,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_MISSED')                     AS contacts_missed,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_QUEUED')                     AS contacts_queued,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_IN')             AS contacts_transferred_in,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_IN_FROM_QUEUE')  AS contacts_transferred_in_from_queue,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_OUT')            AS contacts_transferred_out,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_OUT_FROM_QUEUE') AS contacts_transferred_out_from_queue,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'HANDLE_TIME')                         AS handle_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'HOLD_TIME')                           AS hold_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'INTERACTION_AND_HOLD_TIME')           AS interaction_and_hold_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'INTERACTION_TIME')                    AS interaction_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'OCCUPANCY')                           AS occupancy,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'QUEUE_ANSWER_TIME')                   AS queue_answer_time,
       max(value) FILTER (WHERE api = 'v1' AND metric_name = 'QUEUED_TIME')                         AS queued_time,
       jsonb_object_agg(threshold_value::bigint::text, value)
           FILTER (WHERE api = 'v1' AND metric_name = 'SERVICE_LEVEL')               AS service_level,
       jsonb_object_agg(metric_name
                        || COALESCE(' ' || threshold_comparison || ' ' || threshold_value::bigint, '')
                        || COALESCE(' ' || metric_filters::text, ''), value)
           FILTER (WHERE api = 'v2')                                                 AS v2_metrics,
       max(collected_at)                                                             AS collected_at
FROM historical_metrics
GROUP BY instance_id, interval_start, interval_end, queue_id, channel, routing_profile_id,
         agent_status_id, routing_step_expression, subtype, validation_test_type, profile,
         api, agent_id, dimensions;
