-- historical_metrics_wide reads the stored arrays directly (issue 19, item 2): per
-- metric set, metric_set_layout says where each wide column sits in ``vals``; the view
-- groups the (few) metric_values rows of a slice and dimension group on their integer
-- keys and joins the names after, instead of unnesting every value into
-- historical_metrics and pivoting it back on 14 text/jsonb columns. Same columns, same
-- values (tests/test_examples.py compares it with historical_metrics).

-- Merge jsonb objects (the service-level and V2 maps of a slice's metric sets).
CREATE AGGREGATE collector_jsonb_merge(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb);

CREATE VIEW metric_set_layout AS
SELECT metric_set_id,
       max(api)                                                                  AS api,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'ABANDON_TIME')::int AS abandon_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'AFTER_CONTACT_WORK_TIME')::int AS after_contact_work_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'API_CONTACTS_HANDLED')::int AS api_contacts_handled,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CALLBACK_CONTACTS_HANDLED')::int AS callback_contacts_handled,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_ABANDONED')::int AS contacts_abandoned,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_AGENT_HUNG_UP_FIRST')::int AS contacts_agent_hung_up_first,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_CONSULTED')::int AS contacts_consulted,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED')::int AS contacts_handled,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED_INCOMING')::int AS contacts_handled_incoming,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HANDLED_OUTBOUND')::int AS contacts_handled_outbound,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_HOLD_ABANDONS')::int AS contacts_hold_abandons,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_MISSED')::int AS contacts_missed,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_QUEUED')::int AS contacts_queued,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_IN')::int AS contacts_transferred_in,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_IN_FROM_QUEUE')::int AS contacts_transferred_in_from_queue,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_OUT')::int AS contacts_transferred_out,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'CONTACTS_TRANSFERRED_OUT_FROM_QUEUE')::int AS contacts_transferred_out_from_queue,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'HANDLE_TIME')::int AS handle_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'HOLD_TIME')::int AS hold_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'INTERACTION_AND_HOLD_TIME')::int AS interaction_and_hold_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'INTERACTION_TIME')::int AS interaction_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'OCCUPANCY')::int AS occupancy,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'QUEUE_ANSWER_TIME')::int AS queue_answer_time,
       max(ord) FILTER (WHERE api = 'v1' AND metric_name = 'QUEUED_TIME')::int AS queued_time,
       array_agg(ord::int ORDER BY ord) FILTER (WHERE api = 'v1' AND metric_name = 'SERVICE_LEVEL') AS sl_ords,
       array_agg(threshold_value::bigint::text ORDER BY ord)
           FILTER (WHERE api = 'v1' AND metric_name = 'SERVICE_LEVEL')           AS sl_keys,
       array_agg(ord::int ORDER BY ord) FILTER (WHERE api = 'v2')                AS v2_ords,
       array_agg(metric_name
                 || COALESCE(' ' || COALESCE(threshold_comparison, CASE WHEN threshold_value IS NOT NULL THEN 'LT' END)
                             || ' ' || threshold_value::bigint, '')
                 || COALESCE(' ' || metric_filters::text, '') ORDER BY ord)
           FILTER (WHERE api = 'v2')                                             AS v2_keys
FROM metric_set_members
GROUP BY metric_set_id;

CREATE OR REPLACE VIEW historical_metrics_wide AS
WITH w AS (
    SELECT v.instance_ref, v.slice_start, v.slice_seconds, v.profile_id, v.dims_id,
           max(l.api)                                                            AS api,
           max(v.vals[l.abandon_time]) AS abandon_time,
           max(v.vals[l.after_contact_work_time]) AS after_contact_work_time,
           max(v.vals[l.api_contacts_handled]) AS api_contacts_handled,
           max(v.vals[l.callback_contacts_handled]) AS callback_contacts_handled,
           max(v.vals[l.contacts_abandoned]) AS contacts_abandoned,
           max(v.vals[l.contacts_agent_hung_up_first]) AS contacts_agent_hung_up_first,
           max(v.vals[l.contacts_consulted]) AS contacts_consulted,
           max(v.vals[l.contacts_handled]) AS contacts_handled,
           max(v.vals[l.contacts_handled_incoming]) AS contacts_handled_incoming,
           max(v.vals[l.contacts_handled_outbound]) AS contacts_handled_outbound,
           max(v.vals[l.contacts_hold_abandons]) AS contacts_hold_abandons,
           max(v.vals[l.contacts_missed]) AS contacts_missed,
           max(v.vals[l.contacts_queued]) AS contacts_queued,
           max(v.vals[l.contacts_transferred_in]) AS contacts_transferred_in,
           max(v.vals[l.contacts_transferred_in_from_queue]) AS contacts_transferred_in_from_queue,
           max(v.vals[l.contacts_transferred_out]) AS contacts_transferred_out,
           max(v.vals[l.contacts_transferred_out_from_queue]) AS contacts_transferred_out_from_queue,
           max(v.vals[l.handle_time]) AS handle_time,
           max(v.vals[l.hold_time]) AS hold_time,
           max(v.vals[l.interaction_and_hold_time]) AS interaction_and_hold_time,
           max(v.vals[l.interaction_time]) AS interaction_time,
           max(v.vals[l.occupancy]) AS occupancy,
           max(v.vals[l.queue_answer_time]) AS queue_answer_time,
           max(v.vals[l.queued_time]) AS queued_time,
           collector_jsonb_merge((SELECT jsonb_object_agg(k, v.vals[o])
                                  FROM unnest(l.sl_ords, l.sl_keys) AS s(o, k)))  AS service_level,
           collector_jsonb_merge((SELECT jsonb_object_agg(k, v.vals[o])
                                  FROM unnest(l.v2_ords, l.v2_keys) AS s(o, k)))  AS v2_metrics,
           max(v.collected_at)                                                   AS collected_at
    FROM metric_values v
    JOIN metric_set_layout l ON l.metric_set_id = v.metric_set_id
    GROUP BY v.instance_ref, v.slice_start, v.slice_seconds, v.profile_id, v.dims_id
)
SELECT i.instance_id,
       w.slice_start                                           AS interval_start,
       w.slice_start + make_interval(secs => w.slice_seconds)  AS interval_end,
       d.queue_id, d.channel, d.routing_profile_id, d.agent_status_id,
       d.routing_step_expression, d.subtype, d.validation_test_type,
       p.name                                                  AS profile,
       w.api, d.agent_id, d.dimensions,
       w.abandon_time,
       w.after_contact_work_time,
       w.api_contacts_handled,
       w.callback_contacts_handled,
       w.contacts_abandoned,
       w.contacts_agent_hung_up_first,
       w.contacts_consulted,
       w.contacts_handled,
       w.contacts_handled_incoming,
       w.contacts_handled_outbound,
       w.contacts_hold_abandons,
       w.contacts_missed,
       w.contacts_queued,
       w.contacts_transferred_in,
       w.contacts_transferred_in_from_queue,
       w.contacts_transferred_out,
       w.contacts_transferred_out_from_queue,
       w.handle_time,
       w.hold_time,
       w.interaction_and_hold_time,
       w.interaction_time,
       w.occupancy,
       w.queue_answer_time,
       w.queued_time,
       w.service_level,
       w.v2_metrics,
       w.collected_at
FROM w
JOIN instances i      ON i.ref = w.instance_ref
JOIN profiles p       ON p.id = w.profile_id
JOIN dimension_sets d ON d.id = w.dims_id;
