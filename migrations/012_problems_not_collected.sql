-- collection_problems also lists the slices that are due but were never collected
-- (kind 'not_collected'): per (instance, profile) the service keeps a frontier (every
-- slice before it is collected or a gap); a slice at or after the frontier whose end is
-- more than one interval ago and that is not in collected_slices is overdue. Needs the
-- profile's interval and time zone (profiles, registered by a collector since 010).
-- Sub-day intervals step in UTC; days and weeks step on the profile's local calendar.
CREATE OR REPLACE VIEW collection_problems AS
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
JOIN profiles p ON p.id = g.profile_id
UNION ALL
SELECT 'not_collected', i.instance_id, p.name, s.slice_start, s.slice_end,
       'due since ' || to_char(s.slice_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')
       || ', not collected', NULL, w.updated_at
FROM watermarks w
JOIN instances i ON i.ref = w.instance_ref
JOIN profiles p  ON p.id = w.profile_id AND p.interval_seconds = w.slice_seconds
CROSS JOIN LATERAL (
    SELECT t AS slice_start, t + make_interval(secs => p.interval_seconds) AS slice_end
    FROM generate_series(w.frontier, now() - make_interval(secs => 2 * p.interval_seconds),
                         make_interval(secs => p.interval_seconds)) AS t
    WHERE p.interval_seconds < 86400
    UNION ALL
    SELECT l AT TIME ZONE p.time_zone,
           (l + CASE WHEN p.interval_seconds >= 604800 THEN interval '1 week' ELSE interval '1 day' END)
               AT TIME ZONE p.time_zone
    FROM generate_series(w.frontier AT TIME ZONE p.time_zone,
                         (now() AT TIME ZONE p.time_zone)
                           - 2 * CASE WHEN p.interval_seconds >= 604800 THEN interval '1 week' ELSE interval '1 day' END,
                         CASE WHEN p.interval_seconds >= 604800 THEN interval '1 week' ELSE interval '1 day' END) AS l
    WHERE p.interval_seconds >= 86400
) s
WHERE NOT EXISTS (SELECT 1 FROM collected_slices c
                  WHERE c.instance_ref = w.instance_ref AND c.profile_id = w.profile_id
                    AND c.slice_start = s.slice_start)
  AND NOT EXISTS (SELECT 1 FROM collection_gaps g
                  WHERE g.instance_ref = w.instance_ref AND g.profile_id = w.profile_id
                    AND g.slice_start = s.slice_start);
