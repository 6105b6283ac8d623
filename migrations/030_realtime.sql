-- Real time (GetCurrentMetricData, GetCurrentUserData): the latest snapshot per dimension
-- group or agent in small tables (replaced by each snapshot, so "now" is one SELECT),
-- the history of snapshots in day partitions with their own retention
-- ([storage] realtime_retention_days), and agent state changes as intervals.

ALTER TABLE metric_set_members DROP CONSTRAINT IF EXISTS metric_set_members_api_check;
ALTER TABLE metric_set_members ADD CONSTRAINT metric_set_members_api_check
    CHECK (api IN ('v1', 'v2', 'current'));

-- Queue gauges: one float8[] per (instance, profile, dimension group, metric set), as
-- metric_values keeps them; snapshot_at is the API's DataSnapshotTime.
CREATE TABLE current_latest (
    instance_ref  int         NOT NULL,
    profile_id    smallint    NOT NULL,
    dims_id       int         NOT NULL,
    metric_set_id int         NOT NULL,
    slice_start   timestamptz NOT NULL,
    snapshot_at   timestamptz NOT NULL,
    collected_at  timestamptz NOT NULL,
    vals          double precision[] NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, dims_id, metric_set_id)
);

CREATE TABLE current_values (
    slice_start   timestamptz NOT NULL,
    snapshot_at   timestamptz NOT NULL,
    collected_at  timestamptz NOT NULL,
    instance_ref  int         NOT NULL,
    dims_id       int         NOT NULL,
    metric_set_id int         NOT NULL,
    profile_id    smallint    NOT NULL,
    vals          double precision[] NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, slice_start, dims_id, metric_set_id)
) PARTITION BY RANGE (slice_start);

-- Agents: each agent's state in the latest snapshot, and every snapshot.
CREATE TABLE agent_latest (
    instance_ref       int         NOT NULL,
    profile_id         smallint    NOT NULL,
    agent_id           text        NOT NULL,
    status             text,
    status_arn         text,
    status_since       timestamptz,
    routing_profile_id text,
    hierarchy_group_id text,
    next_status        text,
    contacts           jsonb       NOT NULL,
    slots              jsonb       NOT NULL,
    slice_start        timestamptz NOT NULL,
    snapshot_at        timestamptz NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, agent_id)
);

CREATE TABLE agent_snapshots (
    slice_start        timestamptz NOT NULL,
    snapshot_at        timestamptz NOT NULL,
    instance_ref       int         NOT NULL,
    profile_id         smallint    NOT NULL,
    agent_id           text        NOT NULL,
    status             text,
    status_since       timestamptz,
    routing_profile_id text,
    hierarchy_group_id text,
    next_status        text,
    contacts           jsonb       NOT NULL,
    slots              jsonb       NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, slice_start, agent_id)
) PARTITION BY RANGE (slice_start);

-- Agent state intervals: from the API's StatusStartTimestamp to the next state's (NULL
-- while the agent is still in it; the snapshot time of the first snapshot that no longer
-- lists the agent when it left the filter's scope, e.g. logged out).
CREATE TABLE agent_state_intervals (
    instance_ref int         NOT NULL,
    profile_id   smallint    NOT NULL,
    agent_id     text        NOT NULL,
    started_at   timestamptz NOT NULL,
    status       text,
    ended_at     timestamptz,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, agent_id, started_at)
);
CREATE INDEX agent_state_intervals_open ON agent_state_intervals (instance_ref, profile_id) WHERE ended_at IS NULL;
CREATE INDEX agent_state_intervals_started ON agent_state_intervals (started_at);

-- Day partitions of the two history tables (as collector_ensure_partition does for metric_values).
CREATE FUNCTION collector_ensure_live_partition(tbl text, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := tbl || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF tbl NOT IN ('current_values', 'agent_snapshots') THEN
        RAISE EXCEPTION 'not a real-time history table: %', tbl;
    END IF;
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       name, tbl, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN name;
END $$;

CREATE FUNCTION collector_drop_live_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname IN ('current_values', 'agent_snapshots')
          AND c.relname ~ '^(current_values|agent_snapshots)_[0-9]{8}$'
          AND (to_date(right(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END $$;

-- Where each real-time metric sits in a metric set's vals (NULL: not collected).
CREATE VIEW current_metric_layout AS
SELECT metric_set_id,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_ONLINE')::int             AS agents_online,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_AVAILABLE')::int          AS agents_available,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_ON_CALL')::int            AS agents_on_call,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_NON_PRODUCTIVE')::int     AS agents_non_productive,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_AFTER_CONTACT_WORK')::int AS agents_after_contact_work,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_ERROR')::int              AS agents_error,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_STAFFED')::int            AS agents_staffed,
       max(ord) FILTER (WHERE metric_name = 'CONTACTS_IN_QUEUE')::int         AS contacts_in_queue,
       max(ord) FILTER (WHERE metric_name = 'OLDEST_CONTACT_AGE')::int        AS oldest_contact_age,
       max(ord) FILTER (WHERE metric_name = 'CONTACTS_SCHEDULED')::int        AS contacts_scheduled,
       max(ord) FILTER (WHERE metric_name = 'AGENTS_ON_CONTACT')::int         AS agents_on_contact,
       max(ord) FILTER (WHERE metric_name = 'SLOTS_ACTIVE')::int              AS slots_active,
       max(ord) FILTER (WHERE metric_name = 'SLOTS_AVAILABLE')::int           AS slots_available,
       max(ord) FILTER (WHERE metric_name = 'ESTIMATED_WAIT_TIME')::int       AS estimated_wait_time
FROM metric_set_members
WHERE api = 'current'
GROUP BY metric_set_id;

CREATE VIEW current_queue_now AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)  AS instance_name,
       p.name                                     AS profile,
       d.queue_id, q.name                         AS queue_name,
       d.channel,
       d.routing_profile_id, rp.name              AS routing_profile_name,
       d.agent_status_id, d.routing_step_expression, d.subtype, d.validation_test_type,
       v.snapshot_at, v.slice_start, v.collected_at,
       v.vals[l.contacts_in_queue]          AS contacts_in_queue,
       v.vals[l.oldest_contact_age]         AS oldest_contact_age,
       v.vals[l.agents_available]           AS agents_available,
       v.vals[l.agents_on_contact]          AS agents_on_contact,
       v.vals[l.agents_after_contact_work]  AS agents_after_contact_work,
       v.vals[l.agents_online]              AS agents_online,
       v.vals[l.agents_staffed]             AS agents_staffed,
       v.vals[l.agents_non_productive]      AS agents_non_productive,
       v.vals[l.agents_error]               AS agents_error,
       v.vals[l.agents_on_call]             AS agents_on_call,
       v.vals[l.contacts_scheduled]         AS contacts_scheduled,
       v.vals[l.slots_active]               AS slots_active,
       v.vals[l.slots_available]            AS slots_available,
       v.vals[l.estimated_wait_time]        AS estimated_wait_time
FROM current_latest v
JOIN current_metric_layout l ON l.metric_set_id = v.metric_set_id
JOIN instances i ON i.ref = v.instance_ref
JOIN profiles p ON p.id = v.profile_id
JOIN dimension_sets d ON d.id = v.dims_id
LEFT JOIN queues q ON q.instance_ref = v.instance_ref AND q.queue_id = d.queue_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = v.instance_ref AND rp.routing_profile_id = d.routing_profile_id;

CREATE VIEW current_queue_history AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)  AS instance_name,
       p.name                                     AS profile,
       d.queue_id, q.name                         AS queue_name,
       d.channel,
       d.routing_profile_id, rp.name              AS routing_profile_name,
       d.agent_status_id, d.routing_step_expression, d.subtype, d.validation_test_type,
       v.snapshot_at, v.slice_start, v.collected_at,
       v.vals[l.contacts_in_queue]          AS contacts_in_queue,
       v.vals[l.oldest_contact_age]         AS oldest_contact_age,
       v.vals[l.agents_available]           AS agents_available,
       v.vals[l.agents_on_contact]          AS agents_on_contact,
       v.vals[l.agents_after_contact_work]  AS agents_after_contact_work,
       v.vals[l.agents_online]              AS agents_online,
       v.vals[l.agents_staffed]             AS agents_staffed,
       v.vals[l.agents_non_productive]      AS agents_non_productive,
       v.vals[l.agents_error]               AS agents_error,
       v.vals[l.agents_on_call]             AS agents_on_call,
       v.vals[l.contacts_scheduled]         AS contacts_scheduled,
       v.vals[l.slots_active]               AS slots_active,
       v.vals[l.slots_available]            AS slots_available,
       v.vals[l.estimated_wait_time]        AS estimated_wait_time
FROM current_values v
JOIN current_metric_layout l ON l.metric_set_id = v.metric_set_id
JOIN instances i ON i.ref = v.instance_ref
JOIN profiles p ON p.id = v.profile_id
JOIN dimension_sets d ON d.id = v.dims_id
LEFT JOIN queues q ON q.instance_ref = v.instance_ref AND q.queue_id = d.queue_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = v.instance_ref AND rp.routing_profile_id = d.routing_profile_id;

CREATE VIEW agent_now AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)  AS instance_name,
       p.name                                     AS profile,
       a.agent_id,
       COALESCE(NULLIF(concat_ws(' ', ag.first_name, ag.last_name), ''), ag.username, a.agent_id) AS agent_name,
       ag.username,
       a.status, a.status_since,
       extract(epoch FROM now() - a.status_since)  AS seconds_in_state,
       a.routing_profile_id, rp.name               AS routing_profile_name,
       a.hierarchy_group_id, hg.name               AS hierarchy_group_name,
       jsonb_array_length(a.contacts)              AS contacts,
       (SELECT jsonb_object_agg(s, n) FROM (SELECT c->>'state' AS s, count(*) AS n
                                           FROM jsonb_array_elements(a.contacts) c GROUP BY 1) x)
                                                   AS contact_states,
       a.contacts                                  AS contact_list,
       a.slots, a.next_status, a.snapshot_at
FROM agent_latest a
JOIN instances i ON i.ref = a.instance_ref
JOIN profiles p ON p.id = a.profile_id
LEFT JOIN agents ag ON ag.instance_ref = a.instance_ref AND ag.agent_id = a.agent_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = a.instance_ref AND rp.routing_profile_id = a.routing_profile_id
LEFT JOIN hierarchy_groups hg ON hg.instance_ref = a.instance_ref AND hg.group_id = a.hierarchy_group_id;

CREATE VIEW agent_state_intervals_view AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)  AS instance_name,
       p.name                                     AS profile,
       s.agent_id,
       COALESCE(NULLIF(concat_ws(' ', ag.first_name, ag.last_name), ''), ag.username, s.agent_id) AS agent_name,
       s.status, s.started_at, s.ended_at,
       extract(epoch FROM COALESCE(s.ended_at, now()) - s.started_at) AS seconds,
       s.ended_at IS NULL                          AS ongoing,
       s.last_seen_at
FROM agent_state_intervals s
JOIN instances i ON i.ref = s.instance_ref
JOIN profiles p ON p.id = s.profile_id
LEFT JOIN agents ag ON ag.instance_ref = s.instance_ref AND ag.agent_id = s.agent_id;
