-- Named queries. Each starts with "-- name: <name>"; all parameters are $n.

-- name: upsert_instance
INSERT INTO instances (instance_id, region, account)
VALUES ($1, $2, $3)
ON CONFLICT (instance_id) DO UPDATE SET region = EXCLUDED.region,
    account = COALESCE(EXCLUDED.account, instances.account)
RETURNING ref;

-- name: upsert_profile
INSERT INTO profiles (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id;

-- name: profile_registered
SELECT api, "interval", time_zone FROM profiles WHERE name = $1;

-- name: register_profile
INSERT INTO profiles (name, api, "interval", interval_seconds, period, time_zone, registered_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (name) DO UPDATE
SET api = EXCLUDED.api, "interval" = EXCLUDED."interval", interval_seconds = EXCLUDED.interval_seconds,
    period = EXCLUDED.period, time_zone = EXCLUDED.time_zone, registered_at = EXCLUDED.registered_at
RETURNING id;

-- name: name_instance
INSERT INTO instances (instance_id, region, account, name)
VALUES ($1, $2, $3, $4)
ON CONFLICT (instance_id) DO UPDATE SET name = EXCLUDED.name,
    account = COALESCE(EXCLUDED.account, instances.account)
RETURNING ref;

-- name: find_metric_set
SELECT id FROM metric_sets WHERE signature = $1;

-- name: insert_metric_set
INSERT INTO metric_sets (signature) VALUES ($1)
ON CONFLICT (signature) DO NOTHING
RETURNING id;

-- name: insert_metric_set_members
-- A metric set's members as its API describes them (collector.ports.StorageCodec).
INSERT INTO metric_set_members (metric_set_id, ord, metric_name, statistic, unit, threshold_value,
                                api, threshold_comparison, metric_filters)
SELECT $1, m.ord, m.name, m.statistic, m.unit, m.threshold, m.api, m.comparison, m.filters::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[])
     WITH ORDINALITY AS m(name, statistic, unit, threshold, api, comparison, filters, ord)
ON CONFLICT DO NOTHING;

-- name: upsert_dimension_sets
INSERT INTO dimension_sets (key, queue_id, channel, routing_profile_id, agent_status_id,
                            routing_step_expression, subtype, validation_test_type, agent_id, dimensions)
SELECT k, q, c, r, s, e, t, v, a, d::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[]) AS x(k, q, c, r, s, e, t, v, a, d)
ON CONFLICT (key) DO NOTHING;

-- name: dimension_ids
SELECT key, id FROM dimension_sets WHERE key = ANY($1::text[]);

-- name: create_staging
CREATE TEMP TABLE IF NOT EXISTS staging_values (
    slice_start   timestamptz NOT NULL,
    instance_ref  int         NOT NULL,
    dims_id       int         NOT NULL,
    metric_set_id int         NOT NULL,
    slice_seconds int         NOT NULL,
    profile_id    smallint    NOT NULL,
    collected_at  timestamptz NOT NULL,
    vals          double precision[] NOT NULL
) ON COMMIT DELETE ROWS;

-- name: delete_stale
-- Rows of the re-collected slices that the new collection no longer has. EXCEPT is a
-- hash/sort set operation whatever the (often stale) estimates say; an anti-join here
-- can degrade into a nested loop over staging for every stored row.
DELETE FROM metric_values v
USING (
    SELECT m.instance_ref, m.slice_start, m.slice_seconds, m.profile_id, m.dims_id, m.metric_set_id
    FROM metric_values m
    JOIN unnest($1::int[], $2::timestamptz[], $3::int[], $4::smallint[])
         AS s(instance_ref, slice_start, slice_seconds, profile_id)
      ON m.instance_ref = s.instance_ref AND m.slice_start = s.slice_start
     AND m.slice_seconds = s.slice_seconds AND m.profile_id = s.profile_id
    EXCEPT
    SELECT instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id
    FROM staging_values
) AS d
WHERE v.instance_ref = d.instance_ref AND v.slice_start = d.slice_start
  AND v.slice_seconds = d.slice_seconds AND v.profile_id = d.profile_id
  AND v.dims_id = d.dims_id AND v.metric_set_id = d.metric_set_id;

-- name: upsert_values
INSERT INTO metric_values AS v (slice_start, collected_at, instance_ref, dims_id, metric_set_id,
                                slice_seconds, profile_id, vals)
SELECT slice_start, collected_at, instance_ref, dims_id, metric_set_id, slice_seconds, profile_id, vals
FROM staging_values
ON CONFLICT (instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id)
DO UPDATE SET vals = EXCLUDED.vals, collected_at = EXCLUDED.collected_at
WHERE v.vals IS DISTINCT FROM EXCLUDED.vals;

-- name: kpi_rollup_upsert
-- New slices' contribution to the KPI roll-up (031), added up by the writer from the
-- records it stored (collector/adapters/kpi_rollup.py; the sums as exact decimal text):
-- $1-$20 kpi_queue_rollup rows, $21-$29 kpi_queue_rollup_sl rows. The same upsert as
-- collector_kpi_queue_rollup_apply.
WITH m AS (
    INSERT INTO kpi_queue_rollup AS r
    SELECT * FROM unnest($1::int[], $2::smallint[], $3::date[], $4::int[], $5::date[], $6::int[],
                         $7::timestamptz[], $8::timestamptz[], $9::int[], $10::text[]::numeric[], $11::int[],
                         $12::text[]::numeric[], $13::int[], $14::text[]::numeric[], $15::text[]::numeric[],
                         $16::text[]::numeric[], $17::text[]::numeric[], $18::text[]::numeric[],
                         $19::text[]::numeric[], $20::float8[])
    ON CONFLICT (instance_ref, profile_id, local_date, dims_id, utc_day) DO UPDATE
    SET intervals = r.intervals + EXCLUDED.intervals,
        period_start = least(r.period_start, EXCLUDED.period_start),
        period_end = greatest(r.period_end, EXCLUDED.period_end),
        n_queued = r.n_queued + EXCLUDED.n_queued,
        contacts_queued = r.contacts_queued + EXCLUDED.contacts_queued,
        n_handled = r.n_handled + EXCLUDED.n_handled,
        contacts_handled = r.contacts_handled + EXCLUDED.contacts_handled,
        n_abandoned = r.n_abandoned + EXCLUDED.n_abandoned,
        contacts_abandoned = r.contacts_abandoned + EXCLUDED.contacts_abandoned,
        aht_num = r.aht_num + EXCLUDED.aht_num,
        aht_den = r.aht_den + EXCLUDED.aht_den,
        asa_num = r.asa_num + EXCLUDED.asa_num,
        asa_den = r.asa_den + EXCLUDED.asa_den,
        ab_den = r.ab_den + EXCLUDED.ab_den,
        occupancy = CASE WHEN r.intervals + EXCLUDED.intervals = 1
                         THEN CASE WHEN EXCLUDED.intervals > 0 THEN EXCLUDED.occupancy ELSE r.occupancy END END
), l AS (
    INSERT INTO kpi_queue_rollup_sl AS r
    SELECT * FROM unnest($21::int[], $22::smallint[], $23::date[], $24::int[], $25::date[], $26::text[],
                         $27::int[], $28::text[]::numeric[], $29::text[]::numeric[])
    ON CONFLICT (instance_ref, profile_id, local_date, dims_id, utc_day, threshold) DO UPDATE
    SET slices = r.slices + EXCLUDED.slices,
        answered = r.answered + EXCLUDED.answered,
        queued = r.queued + EXCLUDED.queued
)
SELECT 1;

-- name: kpi_rollup_days
-- The slices' local days (their profiles' time zones, read under a share lock: a time
-- zone change computes the roll-up again and waits for this transaction).
WITH p AS (SELECT id, time_zone FROM profiles WHERE id = ANY($2::smallint[]) ORDER BY id FOR SHARE)
SELECT x.st, x.pid, (x.st AT TIME ZONE COALESCE(p.time_zone, 'UTC'))::date AS local_date
FROM (SELECT DISTINCT st, pid FROM unnest($1::timestamptz[], $2::smallint[]) AS u(st, pid)) x
JOIN p ON p.id = x.pid;

-- name: kpi_layouts
SELECT * FROM kpi_layout WHERE metric_set_id = ANY($1::int[]);

-- name: queue_dims
SELECT id, queue_id IS NOT NULL AND agent_id IS NULL AS queue FROM dimension_sets WHERE id = ANY($1::int[]);

-- name: kpi_rollup_before
-- Re-collected slices (new rows in staging_values): the changed groups' stored contribution out.
SELECT collector_kpi_queue_rollup_before($1::int[], $2::timestamptz[], $3::int[], $4::smallint[]);

-- name: kpi_rollup_after
-- ... and their new contribution in, once the rows are replaced.
SELECT collector_kpi_queue_rollup_after();

-- name: record_slices
-- $8: the collection times on the database's clock (what newest-collection-wins compares).
INSERT INTO collected_slices AS c (instance_ref, slice_start, slice_seconds, profile_id, rows, run_id,
                                  first_collected_at, last_collected_at, ordered_at)
SELECT i, s, sec, p, r, run, t, t, o
FROM unnest($1::int[], $2::timestamptz[], $3::int[], $4::smallint[], $5::int[], $6::bigint[], $7::timestamptz[],
            $8::timestamptz[])
     AS x(i, s, sec, p, r, run, t, o)
ON CONFLICT (instance_ref, profile_id, slice_start, slice_seconds)
DO UPDATE SET rows = EXCLUDED.rows, run_id = EXCLUDED.run_id,
              last_collected_at = EXCLUDED.last_collected_at, ordered_at = EXCLUDED.ordered_at,
              times_collected = c.times_collected + 1;

-- name: run_progress
UPDATE collection_runs
SET slices_done = slices_done + $2, rows_written = rows_written + $3, values_written = values_written + $4
WHERE id = $1;

-- name: create_run
INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status, slices_total,
                             started_at, owner)
VALUES ($1, $2, $3, $4, $5, 'running', $6, now(), $7)
RETURNING id;

-- name: finish_run
-- slices_total: less the slices of shards handed to another replica mid-run.
UPDATE collection_runs
SET status = $2, slices_failed = $3, requests = $4, retries = $5, throttles = $6,
    errors = $7::jsonb, finished_at = now(), slices_total = coalesce($8, slices_total)
WHERE id = $1;

-- name: upsert_queues
INSERT INTO queues (instance_ref, queue_id, arn, name, queue_type, seen_at)
SELECT $1, * , now() FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (instance_ref, queue_id) DO UPDATE
SET arn = EXCLUDED.arn, name = EXCLUDED.name, queue_type = EXCLUDED.queue_type, seen_at = now();

-- name: series_state
-- One round of the scheduler, every (instance, profile) series at once ($1..$6 per series:
-- instance_ref, profile_id, nominal slice seconds, shortest and longest slice, the
-- lookback edge): its frontier, the end of its newest slice, and its collected slices
-- from the frontier on (the edge where there is none) and those from the edge on that
-- were not collected again within $7 seconds of their end (revisit candidates). Slices
-- of another length (an edited interval) are another series' and never match.
WITH s AS (
    SELECT * FROM unnest($1::int[], $2::smallint[], $3::int[], $4::int[], $5::int[], $6::timestamptz[])
        WITH ORDINALITY AS s(instance_ref, profile_id, seconds, lo, hi, since, ord)
)
SELECT s.ord, w.frontier, n.newest, c.starts, c.secs, c.lasts
FROM s
LEFT JOIN watermarks w
       ON w.instance_ref = s.instance_ref AND w.profile_id = s.profile_id AND w.slice_seconds = s.seconds
LEFT JOIN LATERAL (
    SELECT x.slice_start + make_interval(secs => x.slice_seconds) AS newest
    FROM collected_slices x
    WHERE x.instance_ref = s.instance_ref AND x.profile_id = s.profile_id
      AND x.slice_seconds BETWEEN s.lo AND s.hi
    ORDER BY x.slice_start DESC LIMIT 1) n ON true
LEFT JOIN LATERAL (
    SELECT array_agg(x.slice_start) AS starts, array_agg(x.slice_seconds) AS secs,
           array_agg(x.last_collected_at) AS lasts
    FROM collected_slices x
    WHERE x.instance_ref = s.instance_ref AND x.profile_id = s.profile_id
      AND x.slice_seconds BETWEEN s.lo AND s.hi
      AND x.slice_start >= least(coalesce(w.frontier, s.since), s.since)
      AND (x.slice_start >= coalesce(w.frontier, s.since)
           OR x.last_collected_at < x.slice_start + make_interval(secs => x.slice_seconds + $7))) c ON true
ORDER BY s.ord;

-- name: set_frontiers
INSERT INTO watermarks (instance_ref, profile_id, slice_seconds, frontier, updated_at)
SELECT i, p, g, f, now() FROM unnest($1::int[], $2::smallint[], $3::int[], $4::timestamptz[]) AS x(i, p, g, f)
ON CONFLICT (instance_ref, profile_id, slice_seconds)
DO UPDATE SET frontier = GREATEST(watermarks.frontier, EXCLUDED.frontier), updated_at = now();

-- name: record_gaps
INSERT INTO collection_gaps (instance_ref, profile_id, slice_start, slice_seconds, reason, recorded_at)
SELECT $1, $2, s, $3, $4, $5 FROM unnest($6::timestamptz[]) AS s
ON CONFLICT DO NOTHING;

-- name: take_touching_live_gaps
-- A live profile's gaps of this reason that overlap or touch [$4, $5): taken out, to be
-- merged with the new ones into one row per contiguous range (none for other profiles).
DELETE FROM collection_gaps g
WHERE g.instance_ref = $1 AND g.profile_id = $2 AND g.reason = $3
  AND EXISTS (SELECT 1 FROM profiles p WHERE p.id = $2 AND p.api IN ('current', 'agents'))
  AND g.slice_start <= $5 AND g.slice_start + make_interval(secs => g.slice_seconds) >= $4
RETURNING g.slice_start, g.slice_seconds;

-- name: profile_is_live
SELECT api IN ('current', 'agents') FROM profiles WHERE id = $1;

-- name: record_gap_ranges
INSERT INTO collection_gaps (instance_ref, profile_id, slice_start, slice_seconds, reason, recorded_at)
SELECT $1, $2, s, n, $3, $4 FROM unnest($5::timestamptz[], $6::int[]) AS x(s, n)
ON CONFLICT DO NOTHING;

-- name: get_run
SELECT * FROM collection_runs WHERE id = $1;

-- name: list_runs
SELECT * FROM collection_runs
WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3;

-- name: queue_run
INSERT INTO collection_runs (requested_by, profile, range_start, range_end, instances, status, owner)
VALUES ($1, $2, $3, $4, $5, 'queued', $6)
RETURNING id;

-- name: start_run
UPDATE collection_runs SET status = 'running', slices_total = $2, instances = $3, started_at = now()
WHERE id = $1;

-- name: adopt_runs
-- Unfinished runs (without parts) that a service started (requested_by 'api', 'resume' or
-- 'scheduler': never a CLI-side run such as `collector collect` or `collector sandbox`,
-- which its own process ends) of replicas that are dead by the heartbeat
-- table ($2: the TTL), and at start-up ($3) this replica's own from before a restart under
-- the same id: queued/running ones end interrupted; they and the runs a graceful stop left
-- interrupted are returned once (adopted_at), to be resumed. Live replicas' runs are not touched.
UPDATE collection_runs c
SET status = 'interrupted', finished_at = coalesce(c.finished_at, now()), adopted_at = now()
WHERE c.id IN (
    SELECT r.id FROM collection_runs r
    WHERE r.adopted_at IS NULL AND r.status IN ('queued', 'running', 'interrupted')
      AND r.requested_by IN ('api', 'resume', 'scheduler')
      AND NOT EXISTS (SELECT 1 FROM run_parts p WHERE p.run_id = r.id)
      AND CASE WHEN r.owner = $1 THEN $3
               ELSE r.owner IS NULL OR NOT EXISTS (
                   SELECT 1 FROM replicas x
                   WHERE x.id = r.owner AND x.heartbeat_at > now() - make_interval(secs => $2)) END
    ORDER BY r.id FOR UPDATE SKIP LOCKED)
RETURNING c.*;

-- name: requeue_own_parts
-- At start-up: parts this replica id was running before a restart go back to the queue.
UPDATE run_parts SET status = 'queued', claimed_by = NULL, updated_at = now()
WHERE status = 'running' AND claimed_by = $1;

-- name: set_resumed_from
UPDATE collection_runs SET resumed_from = $2 WHERE id = $1;

-- name: save_instance
INSERT INTO instances (instance_id, region, account, arn, alias)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (instance_id) DO UPDATE SET region = EXCLUDED.region,
    account = COALESCE(EXCLUDED.account, instances.account),
    arn = COALESCE(EXCLUDED.arn, instances.arn), alias = COALESCE(EXCLUDED.alias, instances.alias)
RETURNING ref;

-- name: ensure_partition
SELECT collector_ensure_partition($1::date);

-- name: drop_partitions_before
SELECT collector_drop_partitions_before($1) AS dropped;

-- name: prune_bookkeeping
WITH s AS (DELETE FROM collected_slices WHERE slice_start + make_interval(secs => slice_seconds) <= $1),
     g AS (DELETE FROM collection_gaps WHERE slice_start + make_interval(secs => slice_seconds) <= $1)
SELECT 1;

-- name: collected_at_of
-- When each of these slices was last collected, on the database's clock (slices never
-- stored are left out; rows from before migration 021: their writer's clock).
SELECT c.instance_ref, c.slice_start, c.slice_seconds, c.profile_id,
       coalesce(c.ordered_at, c.last_collected_at) AS ordered_at
FROM collected_slices c
JOIN unnest($1::int[], $2::timestamptz[], $3::int[], $4::smallint[])
     AS s(instance_ref, slice_start, slice_seconds, profile_id)
  ON c.instance_ref = s.instance_ref AND c.slice_start = s.slice_start
 AND c.slice_seconds = s.slice_seconds AND c.profile_id = s.profile_id;

-- name: heartbeat
-- $3: the shards ('account/region') this replica's config can serve (NULL: unchanged).
INSERT INTO replicas (id, api_url, serves) VALUES ($1, $2, coalesce($3::text[], '{}'))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), api_url = EXCLUDED.api_url,
    serves = coalesce($3::text[], replicas.serves);

-- name: remove_replica
DELETE FROM replicas WHERE id = $1;

-- name: ensure_shards
INSERT INTO shard_leases (account, region)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING;

-- name: live_replicas
SELECT count(*) FROM replicas WHERE heartbeat_at > now() - make_interval(secs => $1);

-- name: renew_leases
UPDATE shard_leases SET expires_at = now() + make_interval(secs => $2)
WHERE owner = $1 AND expires_at > now()
RETURNING account, region, generation;

-- name: claim_leases
-- Free or expired shards that this replica's config can serve ($4: 'account/region'),
-- skipping rows another replica is claiming right now.
WITH free AS (
    SELECT account, region, owner AS prev_owner FROM shard_leases
    WHERE (owner IS NULL OR expires_at <= now()) AND (account || '/' || region) = ANY($4::text[])
    ORDER BY account, region
    FOR UPDATE SKIP LOCKED
    LIMIT $3
)
UPDATE shard_leases s
SET takeovers = s.takeovers + CASE WHEN s.owner IS NOT NULL AND s.owner <> $1 THEN 1 ELSE 0 END,
    owner = $1, generation = s.generation + 1, acquired_at = now(),
    expires_at = now() + make_interval(secs => $2)
FROM free WHERE s.account = free.account AND s.region = free.region
RETURNING s.account, s.region, s.generation,
          coalesce(free.prev_owner <> $1, false) AS takeover;

-- name: release_leases
UPDATE shard_leases SET owner = NULL, expires_at = now()
WHERE owner = $1 AND ($2::text[] IS NULL OR (account || '/' || region) = ANY($2::text[]));

-- name: lock_fences
-- The batch's leases still held by this replica, locked until the write commits: a
-- takeover (claim_leases, FOR UPDATE) waits for the write, or has already committed
-- and then the generation no longer matches.
SELECT s.account, s.region, s.generation FROM shard_leases s
JOIN unnest($2::text[], $3::text[], $4::bigint[]) AS f(account, region, generation)
  ON s.account = f.account AND s.region = f.region
WHERE s.owner = $1 AND s.generation = f.generation AND s.expires_at > now()
ORDER BY s.account, s.region
FOR SHARE OF s;

-- name: database_clock
SELECT clock_timestamp();

-- name: lock_slices
-- Serialises writers of the same slices (keys per instance, profile, length and day);
-- the keys come sorted (no deadlocks).
SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k;

-- name: cluster_state
SELECT r.id, r.api_url, r.started_at, r.heartbeat_at,
       extract(epoch FROM now() - r.heartbeat_at) AS heartbeat_age,
       coalesce((SELECT json_agg(json_build_object(
            'account', s.account, 'region', s.region, 'generation', s.generation,
            'lease_age', extract(epoch FROM now() - s.acquired_at),
            'expires_in', extract(epoch FROM s.expires_at - now()), 'takeovers', s.takeovers)
            ORDER BY s.account, s.region)
         FROM shard_leases s WHERE s.owner = r.id AND s.expires_at > now()), '[]') AS shards
FROM replicas r ORDER BY r.id;

-- name: unowned_shards
SELECT account, region, takeovers FROM shard_leases WHERE owner IS NULL OR expires_at <= now()
ORDER BY account, region;

-- name: shard_servers
-- Every shard some registered replica (live, or dead without having left) lists in its
-- config, with the live replicas ($1: the TTL) that can serve it: none means nobody
-- will collect it. A shard no replica lists any more (removed from every config) is left out.
SELECT s.account, s.region,
       coalesce(array_agg(r.id ORDER BY r.id) FILTER (
           WHERE r.heartbeat_at > now() - make_interval(secs => $1)), '{}') AS live
FROM shard_leases s
JOIN replicas r ON (s.account || '/' || s.region) = ANY(r.serves)
GROUP BY s.account, s.region
ORDER BY s.account, s.region;

-- name: add_run_parts
INSERT INTO run_parts (run_id, account, region)
SELECT $1, * FROM unnest($2::text[], $3::text[]) ON CONFLICT DO NOTHING;

-- name: requeue_orphan_parts
-- Parts whose replica died mid-run go back to the queue (re-collection is idempotent).
UPDATE run_parts SET status = 'queued', claimed_by = NULL, updated_at = now()
WHERE status = 'running'
  AND claimed_by NOT IN (SELECT id FROM replicas WHERE heartbeat_at > now() - make_interval(secs => $1));

-- name: claim_part
UPDATE run_parts p SET status = 'running', claimed_by = $1, updated_at = now()
FROM (SELECT run_id, account, region FROM run_parts
      WHERE status = 'queued' AND (account || '/' || region) = ANY($2::text[])
      ORDER BY run_id, account, region
      FOR UPDATE SKIP LOCKED LIMIT 1) c
WHERE p.run_id = c.run_id AND p.account = c.account AND p.region = c.region
RETURNING p.run_id, p.account, p.region;

-- name: part_counts
-- The part's counts, if $4 still holds it (claimed it, and it is running).
SELECT slices_total, slices_done, rows_written, values_written FROM run_parts
WHERE run_id = $1 AND account = $2 AND region = $3 AND status = 'running' AND claimed_by = $4 FOR UPDATE;

-- name: part_reset
UPDATE run_parts SET slices_total = $4, slices_done = 0, rows_written = 0, values_written = 0,
                     updated_at = now()
WHERE run_id = $1 AND account = $2 AND region = $3;

-- name: part_started
-- A part's (new) attempt: the counts of an earlier attempt (put back, or taken over from a
-- dead replica) leave the run's, so a resumed part is not counted twice.
UPDATE collection_runs
SET status = 'running', started_at = coalesce(started_at, now()), slices_total = slices_total + $2 - $3,
    slices_done = slices_done - $4, rows_written = rows_written - $5, values_written = values_written - $6
WHERE id = $1 AND status IN ('queued', 'running');

-- name: part_progress
-- What a write stored for the parts of a run (per shard), beside the run's own counts.
UPDATE run_parts p
SET slices_done = p.slices_done + x.n, rows_written = p.rows_written + x.r, values_written = p.values_written + x.v
FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[], $6::bigint[]) AS x(account, region, n, r, v)
WHERE p.run_id = $1 AND p.account = x.account AND p.region = x.region;

-- name: requeue_part
-- A part its replica stopped working on (SIGTERM, its shard handed over) goes back to the
-- queue at once for any replica; the calls it made stay counted.
WITH part AS (
    UPDATE run_parts SET status = 'queued', claimed_by = NULL, updated_at = now()
    WHERE run_id = $1 AND account = $2 AND region = $3 AND status = 'running' AND claimed_by = $4
    RETURNING run_id
)
UPDATE collection_runs SET requests = requests + $5, retries = retries + $6, throttles = throttles + $7
WHERE id IN (SELECT run_id FROM part);

-- name: finish_part
-- Only the part's current holder ($10: the replica that claimed it and still runs it)
-- ends it; a stalled replica whose part was taken over changes nothing (returns no row).
WITH part AS (
    UPDATE run_parts SET status = $4, updated_at = now()
    WHERE run_id = $1 AND account = $2 AND region = $3 AND status = 'running' AND claimed_by = $10
    RETURNING run_id
)
UPDATE collection_runs
SET slices_failed = slices_failed + $5, requests = requests + $6, retries = retries + $7,
    throttles = throttles + $8, errors = errors || $9::jsonb
WHERE id IN (SELECT run_id FROM part)
RETURNING id;

-- name: settle_run
-- When no part is left to do, the run gets its final status.
UPDATE collection_runs r
SET status = CASE WHEN r.slices_failed = 0 AND NOT EXISTS (
                       SELECT 1 FROM run_parts p WHERE p.run_id = r.id AND p.status = 'failed')
                  THEN 'succeeded'
                  WHEN r.slices_done > 0 THEN 'partial' ELSE 'failed' END,
    finished_at = now()
WHERE r.id = $1 AND r.status IN ('queued', 'running')
  AND NOT EXISTS (SELECT 1 FROM run_parts p WHERE p.run_id = r.id AND p.status IN ('queued', 'running'))
RETURNING r.status;

-- name: claim_queued_run
-- The one-off executor (single node) takes the oldest queued run that has no parts.
UPDATE collection_runs SET status = 'running', started_at = now(), owner = $1
WHERE id = (SELECT r.id FROM collection_runs r
            WHERE r.status = 'queued' AND r.requested_by <> 'scheduler'
              AND NOT EXISTS (SELECT 1 FROM run_parts p WHERE p.run_id = r.id)
            ORDER BY r.id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING *;

-- name: count_queued_runs
-- One-off runs waiting: queued ones (a single node's, or a cluster's whose parts have not
-- started), and a cluster's running ones with a part still queued.
SELECT count(*) FROM collection_runs r
WHERE r.requested_by <> 'scheduler'
  AND (r.status = 'queued'
       OR r.status = 'running' AND EXISTS (SELECT 1 FROM run_parts p WHERE p.run_id = r.id AND p.status = 'queued'));

-- Resources for filters and joins (agents, routing profiles, hierarchy groups).

-- name: upsert_agents
INSERT INTO agents (instance_ref, agent_id, arn, username, first_name, last_name, routing_profile_id,
                    hierarchy_group_id, seen_at)
SELECT $1, *, now() FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
ON CONFLICT (instance_ref, agent_id) DO UPDATE
SET arn = EXCLUDED.arn, username = EXCLUDED.username,
    first_name = COALESCE(EXCLUDED.first_name, agents.first_name),
    last_name = COALESCE(EXCLUDED.last_name, agents.last_name),
    routing_profile_id = COALESCE(EXCLUDED.routing_profile_id, agents.routing_profile_id),
    hierarchy_group_id = COALESCE(EXCLUDED.hierarchy_group_id, agents.hierarchy_group_id), seen_at = now();

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

-- == real time (migration 030) ===========================================================

-- name: ensure_live_partition
SELECT collector_ensure_live_partition($1, $2::date);

-- name: drop_live_partitions_before
SELECT collector_drop_live_partitions_before($1) AS dropped;

-- name: prune_live_bookkeeping
-- The real-time profiles' collected slices, gaps and finished agent states older than the
-- cutoff. The bound on slice_start lets the (profile_id, slice_start) indexes (035) read only
-- the rows that go, not every profile's collected slices.
WITH live AS (SELECT id FROM profiles WHERE api IN ('current', 'agents')),
     s AS (DELETE FROM collected_slices WHERE profile_id IN (SELECT id FROM live)
           AND slice_start < $1 AND slice_start + make_interval(secs => slice_seconds) <= $1),
     g AS (DELETE FROM collection_gaps WHERE profile_id IN (SELECT id FROM live)
           AND slice_start < $1 AND slice_start + make_interval(secs => slice_seconds) <= $1),
     a AS (DELETE FROM agent_state_intervals WHERE ended_at <= $1),
     w AS (DELETE FROM agent_acw_intervals WHERE ended_at <= $1)
SELECT 1;

-- name: delete_live_slices
-- A snapshot written again (a write retried after its commit was not acknowledged): its old rows go.
WITH c AS (DELETE FROM current_values v USING unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS x(i, p, s)
           WHERE v.instance_ref = x.i AND v.profile_id = x.p AND v.slice_start = x.s),
     a AS (DELETE FROM agent_snapshots v USING unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS x(i, p, s)
           WHERE v.instance_ref = x.i AND v.profile_id = x.p AND v.slice_start = x.s)
SELECT 1;

-- name: live_newer
-- The snapshots being written that are older than the latest one stored of their
-- (instance, profile): they go to the history only.
SELECT x.i AS instance_ref, x.p AS profile_id, x.s AS slice_start
FROM unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS x(i, p, s)
WHERE EXISTS (SELECT 1 FROM collected_slices c
              WHERE c.instance_ref = x.i AND c.profile_id = x.p AND c.slice_start > x.s);

-- name: clear_current_latest
DELETE FROM current_latest l USING unnest($1::int[], $2::smallint[]) AS x(i, p)
WHERE l.instance_ref = x.i AND l.profile_id = x.p;

-- name: clear_agent_latest
DELETE FROM agent_latest l USING unnest($1::int[], $2::smallint[]) AS x(i, p)
WHERE l.instance_ref = x.i AND l.profile_id = x.p;

-- name: close_superseded_states
-- An agent whose status started after its open interval began: that interval ends there.
UPDATE agent_state_intervals s SET ended_at = x.since
FROM unnest($1::int[], $2::smallint[], $3::text[], $4::timestamptz[]) AS x(i, p, a, since)
WHERE s.instance_ref = x.i AND s.profile_id = x.p AND s.agent_id = x.a AND s.ended_at IS NULL
  AND s.started_at < x.since;

-- name: upsert_states
INSERT INTO agent_state_intervals AS s (instance_ref, profile_id, agent_id, started_at, status, last_seen_at)
SELECT * FROM unnest($1::int[], $2::smallint[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[])
ON CONFLICT (instance_ref, profile_id, agent_id, started_at) DO UPDATE
SET status = EXCLUDED.status, ended_at = NULL, last_seen_at = greatest(s.last_seen_at, EXCLUDED.last_seen_at)
WHERE EXCLUDED.last_seen_at >= s.last_seen_at;

-- name: close_absent_states
-- Agents no longer in the snapshot (logged out, or out of the filter's scope): their state
-- ends with this snapshot, or, when the agent was last seen more than $4 seconds before it
-- (the collector was away), when it was last seen.
UPDATE agent_state_intervals s
SET ended_at = CASE WHEN x.snap - s.last_seen_at > make_interval(secs => $4) THEN s.last_seen_at ELSE x.snap END
FROM unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS x(i, p, snap)
WHERE s.instance_ref = x.i AND s.profile_id = x.p AND s.ended_at IS NULL AND s.last_seen_at < x.snap;

-- name: upsert_acw
-- Contacts in after-contact work (ENDED) in a snapshot: their ACW interval, from the state's start.
INSERT INTO agent_acw_intervals AS s (instance_ref, profile_id, agent_id, contact_id, started_at, channel, queue_id,
                                      last_seen_at)
SELECT * FROM unnest($1::int[], $2::smallint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
                     $8::timestamptz[])
ON CONFLICT (instance_ref, profile_id, agent_id, contact_id, started_at) DO UPDATE
SET ended_at = NULL, last_seen_at = EXCLUDED.last_seen_at
WHERE EXCLUDED.last_seen_at >= s.last_seen_at;

-- name: close_absent_acw
-- ACW no longer in the snapshot (the work is done, or the agent left the scope): it ends
-- by this snapshot, or, when last seen more than $4 seconds before it (the collector was
-- away), when it was last seen.
UPDATE agent_acw_intervals s
SET ended_at = CASE WHEN x.snap - s.last_seen_at > make_interval(secs => $4) THEN s.last_seen_at ELSE x.snap END
FROM unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS x(i, p, snap)
WHERE s.instance_ref = x.i AND s.profile_id = x.p AND s.ended_at IS NULL AND s.last_seen_at < x.snap;

-- The live wallboard (GET /wallboard): the latest queue and agent snapshots from the
-- real-time views, and today's figures per queue from the historical KPI views.

-- name: live_changed_at
-- Whether anything new landed: the newest write or snapshot over both latest tables
-- (compared for inequality: a snapshot that removes rows changes it too). Both tables
-- hold one row per dimension group or agent, so this reads a few thousand rows at most.
SELECT greatest((SELECT max(collected_at) FROM current_latest), (SELECT max(snapshot_at) FROM current_latest),
                (SELECT max(snapshot_at) FROM agent_latest));

-- name: wallboard_queues
SELECT instance_id, instance_name, profile, queue_id, queue_name, channel,
       routing_profile_id, routing_profile_name, snapshot_at,
       contacts_in_queue, oldest_contact_age, agents_available, agents_on_contact,
       agents_after_contact_work, agents_online, agents_staffed, agents_non_productive,
       estimated_wait_time
FROM current_queue_now
ORDER BY instance_name, instance_id, queue_name, queue_id, channel NULLS FIRST,
         routing_profile_name NULLS FIRST, profile;

-- name: wallboard_agents
-- One row per agent (the newest snapshot where two agent profiles overlap), at most $1.
SELECT *, count(*) OVER () AS total
FROM (SELECT DISTINCT ON (instance_id, agent_id)
             instance_id, instance_name, profile, agent_id, agent_name, status, status_since,
             routing_profile_name, hierarchy_group_name, contacts, contact_states, next_status, snapshot_at
      FROM agent_now
      ORDER BY instance_id, agent_id, snapshot_at DESC) a
ORDER BY instance_name, agent_name, agent_id
LIMIT $1;

-- name: wallboard_today
-- Today (the local day of each historical profile's time zone) per profile and queue:
-- per channel, and over all channels (all_channels = 1). Service level is recomputed
-- from counts as kpi_queue_daily does (014). The slice_start bound lets the planner skip
-- every partition older than the longest possible local day.
WITH today AS (
    SELECT instance_id, profile, time_zone, local_date, queue_id, channel, interval_end,
           contacts_queued, contacts_handled, contacts_abandoned, service_level, answered_in
    FROM kpi_queue_interval
    WHERE interval_start >= now() - interval '27 hours'
      AND local_date = (now() AT TIME ZONE time_zone)::date
), counts AS (
    SELECT instance_id, profile, time_zone, local_date, queue_id, channel, grouping(channel) AS all_channels,
           sum(contacts_queued) AS contacts_queued, sum(contacts_handled) AS contacts_handled,
           sum(contacts_abandoned) AS contacts_abandoned, max(interval_end) AS through
    FROM today
    GROUP BY GROUPING SETS ((instance_id, profile, time_zone, local_date, queue_id, channel),
                            (instance_id, profile, time_zone, local_date, queue_id))
), sl AS (
    SELECT instance_id, profile, queue_id, channel, grouping(channel) AS all_channels, e.threshold,
           sum(COALESCE((answered_in->>e.threshold)::float8, e.value::float8 * contacts_queued / 100.0)) AS num,
           sum(contacts_queued) FILTER (WHERE COALESCE(answered_in->>e.threshold, e.value) IS NOT NULL) AS den
    FROM today t CROSS JOIN LATERAL jsonb_each_text(t.service_level) AS e(threshold, value)
    GROUP BY GROUPING SETS ((instance_id, profile, queue_id, channel, e.threshold),
                            (instance_id, profile, queue_id, e.threshold))
)
SELECT c.*,
       (SELECT jsonb_object_agg(s.threshold, round((100.0 * s.num / NULLIF(s.den, 0))::numeric, 2))
        FROM sl s
        WHERE s.instance_id = c.instance_id AND s.profile = c.profile AND s.queue_id = c.queue_id
          AND s.all_channels = c.all_channels AND s.channel IS NOT DISTINCT FROM c.channel) AS service_level
FROM counts c;
