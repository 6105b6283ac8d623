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
