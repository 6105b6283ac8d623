-- connect-collector schema, version 1.
-- Values are stored compactly: one row per (instance, slice, profile, dimension
-- group, metric set) holding a float8[] of values in the metric set's order.
-- The public surface is the two views at the end.

CREATE TABLE instances (
    ref          serial PRIMARY KEY,
    instance_id  text NOT NULL UNIQUE,
    region       text NOT NULL,
    account      text,
    arn          text,
    alias        text,
    first_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE queues (
    instance_ref int  NOT NULL REFERENCES instances(ref),
    queue_id     text NOT NULL,
    arn          text,
    name         text,
    queue_type   text NOT NULL DEFAULT 'STANDARD',
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, queue_id)
);

CREATE TABLE profiles (
    id   smallserial PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE metric_sets (
    id        serial PRIMARY KEY,
    signature text NOT NULL UNIQUE
);

CREATE TABLE metric_set_members (
    metric_set_id   int    NOT NULL REFERENCES metric_sets(id),
    ord             bigint NOT NULL,
    metric_name     text   NOT NULL,
    statistic       text   NOT NULL,
    unit            text   NOT NULL,
    threshold_value double precision,
    PRIMARY KEY (metric_set_id, ord)
);

CREATE TABLE dimension_sets (
    id                      serial PRIMARY KEY,
    key                     text NOT NULL UNIQUE,
    queue_id                text,
    channel                 text,
    routing_profile_id      text,
    agent_status_id         text,
    routing_step_expression text,
    subtype                 text,
    validation_test_type    text
);

-- Column order keeps the tuple tightly packed (8-byte, then 4, then 2).
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
);

-- Which slices were collected (also those that came back empty), and when.
CREATE TABLE collected_slices (
    instance_ref  int         NOT NULL,
    slice_start   timestamptz NOT NULL,
    slice_seconds int         NOT NULL,
    profile_id    smallint    NOT NULL,
    rows          int         NOT NULL,
    first_collected_at timestamptz NOT NULL DEFAULT now(),
    last_collected_at  timestamptz NOT NULL DEFAULT now(),
    times_collected    int    NOT NULL DEFAULT 1,
    run_id        bigint,
    PRIMARY KEY (instance_ref, profile_id, slice_start, slice_seconds)
);

CREATE TABLE collection_runs (
    id             bigserial PRIMARY KEY,
    requested_by   text NOT NULL,
    profile        text NOT NULL DEFAULT 'default',
    range_start    timestamptz,
    range_end      timestamptz,
    instances      text[] NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'interrupted')),
    slices_total   int    NOT NULL DEFAULT 0,
    slices_done    int    NOT NULL DEFAULT 0,
    slices_failed  int    NOT NULL DEFAULT 0,
    rows_written   bigint NOT NULL DEFAULT 0,
    values_written bigint NOT NULL DEFAULT 0,
    requests       int    NOT NULL DEFAULT 0,
    retries        int    NOT NULL DEFAULT 0,
    throttles      int    NOT NULL DEFAULT 0,
    errors         jsonb  NOT NULL DEFAULT '[]',
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz
);
CREATE INDEX collection_runs_status ON collection_runs (status, id);

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
