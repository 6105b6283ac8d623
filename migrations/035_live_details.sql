-- After-contact work as intervals of its own: one row per agent and contact in ACW
-- (GetCurrentUserData lists the contact with AgentContactState ENDED while it lasts; the
-- agent's status stays what it was). started_at is the contact's StateStartTimestamp in
-- ENDED (exact); the API does not say when ACW ends, so ended_at is the first snapshot
-- without it (the end lies between last_seen_at and ended_at, to within a period; when
-- the collector was away, last_seen_at). NULL while ongoing.
CREATE TABLE agent_acw_intervals (
    instance_ref int         NOT NULL,
    profile_id   smallint    NOT NULL,
    agent_id     text        NOT NULL,
    contact_id   text        NOT NULL,
    started_at   timestamptz NOT NULL,
    channel      text,
    queue_id     text,
    ended_at     timestamptz,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, agent_id, contact_id, started_at)
);
CREATE INDEX agent_acw_intervals_open ON agent_acw_intervals (instance_ref, profile_id) WHERE ended_at IS NULL;
CREATE INDEX agent_acw_intervals_started ON agent_acw_intervals (started_at);
CREATE INDEX agent_acw_intervals_ended ON agent_acw_intervals (ended_at) WHERE ended_at IS NOT NULL;

CREATE VIEW agent_acw_intervals_view AS
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id)  AS instance_name,
       p.name                                     AS profile,
       s.agent_id,
       COALESCE(NULLIF(concat_ws(' ', ag.first_name, ag.last_name), ''), ag.username, s.agent_id) AS agent_name,
       s.contact_id, s.channel, s.queue_id, q.name AS queue_name,
       s.started_at, s.ended_at,
       extract(epoch FROM COALESCE(s.ended_at, now()) - s.started_at) AS seconds,
       s.ended_at IS NULL                          AS ongoing,
       s.last_seen_at
FROM agent_acw_intervals s
JOIN instances i ON i.ref = s.instance_ref
JOIN profiles p ON p.id = s.profile_id
LEFT JOIN agents ag ON ag.instance_ref = s.instance_ref AND ag.agent_id = s.agent_id
LEFT JOIN queues q ON q.instance_ref = s.instance_ref AND q.queue_id = s.queue_id;

-- Both kinds of interval in one view: kind 'status' (the agent's status, as in
-- agent_state_intervals_view) and 'acw' (status 'ACW', one row per contact in ACW).
-- They overlap in time (an agent in ACW keeps its status): sum within one kind.
CREATE VIEW agent_intervals_view AS
SELECT 'status'::text AS kind, instance_id, instance_name, profile, agent_id, agent_name, status,
       NULL::text AS contact_id, started_at, ended_at, seconds, ongoing, last_seen_at
FROM agent_state_intervals_view
UNION ALL
SELECT 'acw', instance_id, instance_name, profile, agent_id, agent_name, 'ACW',
       contact_id, started_at, ended_at, seconds, ongoing, last_seen_at
FROM agent_acw_intervals_view;

-- The live prune (prune_live_bookkeeping) deletes the real-time profiles' collected slices
-- and gaps older than the cutoff: by profile and start, which the primary keys (instance
-- first) cannot serve, so it read every collected slice of every profile each time.
CREATE INDEX collected_slices_profile_start ON collected_slices (profile_id, slice_start);
CREATE INDEX collection_gaps_profile_start ON collection_gaps (profile_id, slice_start);
