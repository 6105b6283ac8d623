-- The long-lived service: per (instance, profile, slice length) frontiers, and
-- the slices that aged out of the API's lookback before they could be collected.

CREATE TABLE watermarks (
    instance_ref  int         NOT NULL,
    profile_id    smallint    NOT NULL,
    slice_seconds int         NOT NULL,
    -- every slice starting before this has been collected at least once (or is a gap)
    frontier      timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, profile_id, slice_seconds)
);

CREATE TABLE collection_gaps (
    instance_ref  int         NOT NULL,
    profile_id    smallint    NOT NULL,
    slice_start   timestamptz NOT NULL,
    slice_seconds int         NOT NULL,
    reason        text        NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_ref, profile_id, slice_start, slice_seconds)
);

ALTER TABLE collection_runs ADD COLUMN resumed_from bigint;

CREATE VIEW collection_gaps_view AS
SELECT i.instance_id, p.name AS profile, g.slice_start AS interval_start,
       g.slice_start + make_interval(secs => g.slice_seconds) AS interval_end,
       g.reason, g.recorded_at
FROM collection_gaps g
JOIN instances i ON i.ref = g.instance_ref
JOIN profiles p ON p.id = g.profile_id;
