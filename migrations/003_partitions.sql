-- Values partitioned by UTC day of the slice start, so retention drops whole
-- partitions instead of deleting rows. The writer creates each day's partition
-- (collector_ensure_partition) before it writes into it.

DROP VIEW historical_metrics_wide;
DROP VIEW historical_metrics;
ALTER TABLE metric_values RENAME TO metric_values_unpartitioned;
ALTER INDEX metric_values_pkey RENAME TO metric_values_unpartitioned_pkey;

CREATE TABLE metric_values (
    slice_start   timestamptz NOT NULL,
    collected_at  timestamptz NOT NULL,
    instance_ref  int         NOT NULL,
    dims_id       int         NOT NULL,
    metric_set_id int         NOT NULL,
    slice_seconds int         NOT NULL,
    profile_id    smallint    NOT NULL,
    vals          double precision[] NOT NULL,
    PRIMARY KEY (instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id)
) PARTITION BY RANGE (slice_start);

CREATE FUNCTION collector_ensure_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'metric_values_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF metric_values FOR VALUES FROM (%L) TO (%L)',
            name, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN name;
END $$;

-- Drop the partitions that hold only slices starting before the cutoff; returns their names.
CREATE FUNCTION collector_drop_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'metric_values' AND c.relname ~ '^metric_values_[0-9]{8}$'
          AND (to_date(substr(c.relname, 15), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END $$;

SELECT collector_ensure_partition(d)
FROM (SELECT DISTINCT (slice_start AT TIME ZONE 'UTC')::date AS d FROM metric_values_unpartitioned) days;

INSERT INTO metric_values SELECT * FROM metric_values_unpartitioned;
DROP TABLE metric_values_unpartitioned;

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
       v.collected_at
FROM metric_values v
JOIN instances i       ON i.ref = v.instance_ref
JOIN profiles p        ON p.id = v.profile_id
JOIN dimension_sets d  ON d.id = v.dims_id
CROSS JOIN LATERAL unnest(v.vals) WITH ORDINALITY AS u(value, ord)
JOIN metric_set_members m ON m.metric_set_id = v.metric_set_id AND m.ord = u.ord;

-- One row per instance, slice, profile and dimension group; one column per
-- metric (lower-case name). Service levels are one jsonb map column
-- "service_level": {"<threshold seconds>": value, ...}.
CREATE VIEW historical_metrics_wide AS
SELECT instance_id, interval_start, interval_end,
       queue_id, channel, routing_profile_id, agent_status_id,
       routing_step_expression, subtype, validation_test_type, profile,
       max(value) FILTER (WHERE metric_name = 'ABANDON_TIME')                        AS abandon_time,
       max(value) FILTER (WHERE metric_name = 'AFTER_CONTACT_WORK_TIME')             AS after_contact_work_time,
       max(value) FILTER (WHERE metric_name = 'API_CONTACTS_HANDLED')                AS api_contacts_handled,
       max(value) FILTER (WHERE metric_name = 'CALLBACK_CONTACTS_HANDLED')           AS callback_contacts_handled,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_ABANDONED')                  AS contacts_abandoned,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_AGENT_HUNG_UP_FIRST')        AS contacts_agent_hung_up_first,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_CONSULTED')                  AS contacts_consulted,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_HANDLED')                    AS contacts_handled,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_HANDLED_INCOMING')           AS contacts_handled_incoming,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_HANDLED_OUTBOUND')           AS contacts_handled_outbound,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_HOLD_ABANDONS')              AS contacts_hold_abandons,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_MISSED')                     AS contacts_missed,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_QUEUED')                     AS contacts_queued,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_TRANSFERRED_IN')             AS contacts_transferred_in,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_TRANSFERRED_IN_FROM_QUEUE')  AS contacts_transferred_in_from_queue,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_TRANSFERRED_OUT')            AS contacts_transferred_out,
       max(value) FILTER (WHERE metric_name = 'CONTACTS_TRANSFERRED_OUT_FROM_QUEUE') AS contacts_transferred_out_from_queue,
       max(value) FILTER (WHERE metric_name = 'HANDLE_TIME')                         AS handle_time,
       max(value) FILTER (WHERE metric_name = 'HOLD_TIME')                           AS hold_time,
       max(value) FILTER (WHERE metric_name = 'INTERACTION_AND_HOLD_TIME')           AS interaction_and_hold_time,
       max(value) FILTER (WHERE metric_name = 'INTERACTION_TIME')                    AS interaction_time,
       max(value) FILTER (WHERE metric_name = 'OCCUPANCY')                           AS occupancy,
       max(value) FILTER (WHERE metric_name = 'QUEUE_ANSWER_TIME')                   AS queue_answer_time,
       max(value) FILTER (WHERE metric_name = 'QUEUED_TIME')                         AS queued_time,
       jsonb_object_agg(threshold_value::bigint::text, value)
           FILTER (WHERE metric_name = 'SERVICE_LEVEL')                              AS service_level,
       max(collected_at)                                                             AS collected_at
FROM historical_metrics
GROUP BY instance_id, interval_start, interval_end, queue_id, channel, routing_profile_id,
         agent_status_id, routing_step_expression, subtype, validation_test_type, profile;
