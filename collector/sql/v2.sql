-- Named queries of the GetMetricDataV2 path (collector.adapters.postgres_v2).
-- Each starts with "-- name: <name>"; all parameters are $n. The slice write
-- itself reuses queries.sql (staging, delete_stale, upsert_values, record_slices).

-- name: insert_metric_set_members_v2
INSERT INTO metric_set_members (metric_set_id, ord, metric_name, statistic, unit, threshold_value,
                                api, threshold_comparison, metric_filters)
SELECT $1, m.ord, m.name, NULL, m.unit, m.threshold, 'v2', m.comparison, m.filters::jsonb
FROM unnest($2::text[], $3::text[], $4::float8[], $5::text[], $6::text[]) WITH ORDINALITY
     AS m(name, unit, threshold, comparison, filters, ord)
ON CONFLICT DO NOTHING;

-- name: upsert_dimension_sets_v2
INSERT INTO dimension_sets (key, queue_id, channel, routing_profile_id, agent_status_id,
                            routing_step_expression, subtype, validation_test_type, agent_id, dimensions)
SELECT k, q, c, r, NULL, e, s, v, a, d::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[]) AS x(k, q, c, r, e, s, v, a, d)
ON CONFLICT (key) DO NOTHING;

-- name: upsert_agents
INSERT INTO agents (instance_ref, agent_id, arn, username, first_name, last_name, seen_at)
SELECT $1, *, now() FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
ON CONFLICT (instance_ref, agent_id) DO UPDATE
SET arn = EXCLUDED.arn, username = EXCLUDED.username,
    first_name = COALESCE(EXCLUDED.first_name, agents.first_name),
    last_name = COALESCE(EXCLUDED.last_name, agents.last_name), seen_at = now();

-- name: upsert_routing_profiles
INSERT INTO routing_profiles (instance_ref, routing_profile_id, arn, name, seen_at)
SELECT $1, *, now() FROM unnest($2::text[], $3::text[], $4::text[])
ON CONFLICT (instance_ref, routing_profile_id) DO UPDATE
SET arn = EXCLUDED.arn, name = EXCLUDED.name, seen_at = now();

-- name: upsert_hierarchy_groups
INSERT INTO hierarchy_groups (instance_ref, group_id, arn, name, level, seen_at)
SELECT $1, *, now() FROM unnest($2::text[], $3::text[], $4::text[], $5::smallint[])
ON CONFLICT (instance_ref, group_id) DO UPDATE
SET arn = EXCLUDED.arn, name = EXCLUDED.name, level = COALESCE(EXCLUDED.level, hierarchy_groups.level),
    seen_at = now();

-- The V2 scheduler looks collected slices up by start alone: a profile's slices all
-- have its interval, but a DST day is 23 or 25 hours (slice_seconds is the real length).

-- name: collected_starts_v2
SELECT slice_start FROM collected_slices
WHERE instance_ref = $1 AND profile_id = $2 AND slice_start >= $3 AND slice_start < $4;

-- name: revisits_due_v2
SELECT DISTINCT c.slice_start FROM collected_slices c
CROSS JOIN unnest($3::int[]) AS d(delay)
WHERE c.instance_ref = $1 AND c.profile_id = $2
  AND c.slice_start >= $5
  AND c.slice_start + make_interval(secs => c.slice_seconds + d.delay) <= $4
  AND c.last_collected_at < c.slice_start + make_interval(secs => c.slice_seconds + d.delay)
ORDER BY c.slice_start;

-- name: next_revisit_v2
SELECT min(c.slice_start + make_interval(secs => c.slice_seconds + d.delay)) FROM collected_slices c
CROSS JOIN unnest($3::int[]) AS d(delay)
WHERE c.instance_ref = $1 AND c.profile_id = $2
  AND c.slice_start >= $5
  AND c.slice_start + make_interval(secs => c.slice_seconds + d.delay) > $4
  AND c.last_collected_at < c.slice_start + make_interval(secs => c.slice_seconds + d.delay);

-- name: newest_collected_v2
SELECT max(slice_start + make_interval(secs => slice_seconds)) FROM collected_slices
WHERE instance_ref = $1 AND profile_id = $2;
