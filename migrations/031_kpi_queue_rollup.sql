-- kpi_queue_daily and kpi_queue_weekly read maintained roll-up rows (issue 19, item 2):
-- a per-day KPI reads rows in proportion to its answer, not to the stored values.
--
--  kpi_queue_rollup     per (instance, profile, local day, dimension group, UTC day of the
--                       slices): the sums the daily KPIs are computed from (counts, the
--                       weighted averages' numerators and weights, the slices' span)
--  kpi_queue_rollup_sl  ... and per service-level threshold: contacts answered within it
--                       and the contacts queued they are counted against
--
-- The writer maintains both in the transaction that stores the slices: a new slice's
-- contribution is added (collector_kpi_queue_rollup_add); for re-collected slices, the
-- (slice, group) pairs whose rows change have their old contribution subtracted before
-- the rows are replaced and the new one added after (..._before, ..._after), so the
-- roll-up always equals a computation from scratch over metric_values (the sums are
-- numeric: adding and subtracting them is exact). Where a re-collection no longer has a group a
-- slice had, that group's rows of that UTC day are computed again from metric_values
-- (its span may have shrunk). Rows are kept per UTC day of the slices (the partition of
-- metric_values they come from), so retention dropping a day's partition drops that
-- day's roll-up rows with it; a profile whose time zone changes has its roll-up
-- computed again (its slices' local days moved). Names (instance, queue, routing
-- profile) and the profile's API are joined at read time, as before.
--
-- Same columns, same values as 014 (tests/test_kpi_rollup.py compares them).

CREATE TABLE kpi_queue_rollup (
    instance_ref       int         NOT NULL,
    profile_id         smallint    NOT NULL,
    local_date         date        NOT NULL,
    dims_id            int         NOT NULL,
    utc_day            date        NOT NULL,
    intervals          int         NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    n_queued           int         NOT NULL,  -- slices with a value (the sum is NULL where none has)
    contacts_queued    numeric     NOT NULL,
    n_handled          int         NOT NULL,
    contacts_handled   numeric     NOT NULL,
    n_abandoned        int         NOT NULL,
    contacts_abandoned numeric     NOT NULL,
    aht_num            numeric     NOT NULL,  -- sum of avg handle time x contacts handled
    aht_den            numeric     NOT NULL,  -- contacts handled where avg handle time is known
    asa_num            numeric     NOT NULL,
    asa_den            numeric     NOT NULL,
    ab_den             numeric     NOT NULL,  -- contacts queued where contacts abandoned is known
    occupancy          float8,                -- the slice's own where the row is one slice
    PRIMARY KEY (instance_ref, profile_id, local_date, dims_id, utc_day)
);
CREATE INDEX kpi_queue_rollup_utc_day ON kpi_queue_rollup (utc_day);

CREATE TABLE kpi_queue_rollup_sl (
    instance_ref int      NOT NULL,
    profile_id   smallint NOT NULL,
    local_date   date     NOT NULL,
    dims_id      int      NOT NULL,
    utc_day      date     NOT NULL,
    threshold    text     NOT NULL,  -- "20", "<=60": the KPI views' service-level keys
    slices       int      NOT NULL,
    answered     numeric  NOT NULL,
    queued       numeric  NOT NULL,
    PRIMARY KEY (instance_ref, profile_id, local_date, dims_id, utc_day, threshold)
);
CREATE INDEX kpi_queue_rollup_sl_utc_day ON kpi_queue_rollup_sl (utc_day);

-- One row per collected slice and queue dimension group: what the roll-up adds up
-- (kpi_interval, 015, with the slice's local and UTC day).
CREATE VIEW kpi_queue_slice AS
SELECT k.instance_ref, k.profile_id, k.dims_id, k.slice_start, k.slice_seconds,
       (k.slice_start AT TIME ZONE 'UTC')::date                        AS utc_day,
       (k.slice_start AT TIME ZONE COALESCE(p.time_zone, 'UTC'))::date AS local_date,
       k.contacts_queued, k.contacts_handled, k.contacts_abandoned, k.avg_handle_time, k.avg_answer_time,
       k.occupancy, k.service_level, k.answered_in
FROM kpi_interval k
JOIN profiles p       ON p.id = k.profile_id
JOIN dimension_sets d ON d.id = k.dims_id
WHERE d.queue_id IS NOT NULL AND d.agent_id IS NULL;

-- The writer's temporary bookkeeping (one per session, emptied at commit): the (slice,
-- group) pairs a re-collection changes, those whose old contribution was subtracted, and
-- the groups to compute again.
CREATE FUNCTION collector_kpi_rollup_temp() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.kpi_rollup_pairs') IS NULL THEN
        CREATE TEMP TABLE kpi_rollup_pairs (
            instance_ref int, slice_start timestamptz, slice_seconds int, profile_id smallint, dims_id int
        ) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE kpi_rollup_old (
            instance_ref int, profile_id smallint, local_date date, dims_id int, utc_day date,
            slice_start timestamptz, slice_seconds int
        ) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE kpi_rollup_vanished (
            instance_ref int, profile_id smallint, dims_id int, utc_day date
        ) ON COMMIT DELETE ROWS;
    END IF;
END $$;

-- Compute the roll-up rows again from metric_values: all of them, or those of one
-- profile, or of one (instance, profile, dimension group, UTC day). NULL: any.
CREATE FUNCTION collector_kpi_queue_rollup_rebuild(p_instance int, p_profile smallint, p_dims int, p_day date)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cond text := concat_ws(' AND ', 'true',
        CASE WHEN p_instance IS NOT NULL THEN format('instance_ref = %s', p_instance) END,
        CASE WHEN p_profile IS NOT NULL THEN format('profile_id = %s', p_profile) END,
        CASE WHEN p_dims IS NOT NULL THEN format('dims_id = %s', p_dims) END,
        CASE WHEN p_day IS NOT NULL THEN format('utc_day = %L', p_day) END);
    src text := concat_ws(' AND ', cond,
        CASE WHEN p_day IS NOT NULL THEN format('slice_start >= %L AND slice_start < %L',
                                                p_day::timestamp AT TIME ZONE 'UTC',
                                                (p_day + 1)::timestamp AT TIME ZONE 'UTC') END);
BEGIN
    EXECUTE 'DELETE FROM kpi_queue_rollup WHERE ' || cond;
    EXECUTE 'DELETE FROM kpi_queue_rollup_sl WHERE ' || cond;
    EXECUTE $q$
    INSERT INTO kpi_queue_rollup
    SELECT instance_ref, profile_id, local_date, dims_id, utc_day,
           count(*), min(slice_start), max(slice_start + make_interval(secs => slice_seconds)),
           count(contacts_queued), COALESCE(sum(contacts_queued::numeric), 0),
           count(contacts_handled), COALESCE(sum(contacts_handled::numeric), 0),
           count(contacts_abandoned), COALESCE(sum(contacts_abandoned::numeric), 0),
           COALESCE(sum((avg_handle_time * contacts_handled)::numeric), 0),
           COALESCE(sum(contacts_handled::numeric) FILTER (WHERE avg_handle_time IS NOT NULL), 0),
           COALESCE(sum((avg_answer_time * contacts_handled)::numeric), 0),
           COALESCE(sum(contacts_handled::numeric) FILTER (WHERE avg_answer_time IS NOT NULL), 0),
           COALESCE(sum(contacts_queued::numeric) FILTER (WHERE contacts_abandoned IS NOT NULL), 0),
           CASE WHEN count(*) = 1 THEN max(occupancy) END
    FROM kpi_queue_slice WHERE $q$ || src || $q$
    GROUP BY instance_ref, profile_id, local_date, dims_id, utc_day $q$;
    EXECUTE $q$
    INSERT INTO kpi_queue_rollup_sl
    SELECT k.instance_ref, k.profile_id, k.local_date, k.dims_id, k.utc_day, e.threshold, count(*),
           COALESCE(sum(COALESCE((k.answered_in->>e.threshold)::float8,
                                 e.value::float8 * k.contacts_queued / 100.0)::numeric), 0),
           COALESCE(sum(k.contacts_queued::numeric)
                        FILTER (WHERE COALESCE(k.answered_in->>e.threshold, e.value) IS NOT NULL), 0)
    FROM kpi_queue_slice k
    CROSS JOIN LATERAL jsonb_each_text(k.service_level) AS e(threshold, value)
    WHERE $q$ || src || $q$
    GROUP BY 1, 2, 3, 4, 5, 6 $q$;
END $$;

-- Add (p_sign = 1) or subtract (-1) the contribution the metric_values rows reached by
-- ``source`` (a FROM clause naming them ``v``; $1..$4: slice key arrays) have now. The
-- same expressions as kpi_interval (015) and kpi_queue_slice over those rows only, read
-- once: per (slice, group) the KPI inputs, per threshold the service level's numerator
-- and weight (kpi_queue_slice is what the roll-up is checked against). Subtracting also
-- records the (group, slice) pairs it took out (kpi_rollup_old); adding reports those no
-- longer there (kpi_rollup_vanished).
CREATE FUNCTION collector_kpi_queue_rollup_apply(source text, p_sign int, irefs int[], starts timestamptz[],
                                                 secs int[], pids smallint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($q$
    WITH lay AS MATERIALIZED (
        SELECT * FROM kpi_layout  -- a few rows: once, not once per stored row
    ), raw AS MATERIALIZED (
        SELECT v.instance_ref, v.profile_id, v.slice_start, v.slice_seconds, v.dims_id, v.vals,
               (v.slice_start AT TIME ZONE 'UTC')::date                        AS utc_day,
               (v.slice_start AT TIME ZONE COALESCE(p.time_zone, 'UTC'))::date AS local_date,
               l.contacts_queued AS o_queued, l.contacts_handled AS o_handled,
               l.contacts_abandoned AS o_abandoned, l.avg_handle_time AS o_aht, l.avg_answer_time AS o_asa,
               l.occupancy AS o_occupancy, l.sl_ords, l.sl_keys, l.answered_ords, l.answered_keys,
               -- the slice and group's contacts queued (whichever of its metric sets has it)
               max(v.vals[l.contacts_queued]) OVER (PARTITION BY v.instance_ref, v.profile_id, v.slice_start,
                                                                 v.slice_seconds, v.dims_id) AS group_queued
        %s
        JOIN lay l            ON l.metric_set_id = v.metric_set_id
        JOIN dimension_sets d ON d.id = v.dims_id
        JOIN profiles p       ON p.id = v.profile_id
        WHERE d.queue_id IS NOT NULL AND d.agent_id IS NULL
    ), k AS MATERIALIZED (
        SELECT instance_ref, profile_id, slice_start, slice_seconds, dims_id, utc_day, local_date,
               max(vals[o_queued])    AS contacts_queued,
               max(vals[o_handled])   AS contacts_handled,
               max(vals[o_abandoned]) AS contacts_abandoned,
               max(vals[o_aht])       AS avg_handle_time,
               max(vals[o_asa])       AS avg_answer_time,
               max(vals[o_occupancy]) AS occupancy
        FROM raw
        GROUP BY instance_ref, profile_id, slice_start, slice_seconds, dims_id, utc_day, local_date
    ), t AS (
        -- per slice, group and threshold: the service level and V2's answered-within count
        SELECT r.instance_ref, r.profile_id, r.local_date, r.dims_id, r.utc_day, s.k AS threshold,
               max(r.vals[s.o]) FILTER (WHERE s.sl)                                 AS sl,
               max(r.vals[s.o]) FILTER (WHERE NOT s.sl AND r.vals[s.o] IS NOT NULL) AS answered,
               max(r.group_queued)                                                  AS queued
        FROM raw r
        CROSS JOIN LATERAL (SELECT u.o, u.k, true FROM unnest(r.sl_ords, r.sl_keys) AS u(o, k)
                            UNION ALL
                            SELECT u.o, u.k, false FROM unnest(r.answered_ords, r.answered_keys) AS u(o, k))
                   AS s(o, k, sl)
        GROUP BY r.instance_ref, r.profile_id, r.slice_start, r.slice_seconds, r.dims_id, r.local_date, r.utc_day, s.k
        HAVING bool_or(s.sl)
    ), e AS (
        SELECT instance_ref, profile_id, local_date, dims_id, utc_day, threshold,
               COALESCE(answered, sl * queued / 100.0)                     AS num,
               CASE WHEN COALESCE(answered, sl) IS NOT NULL THEN queued END AS den
        FROM t
    ), m AS (
        INSERT INTO kpi_queue_rollup AS r
        SELECT instance_ref, profile_id, local_date, dims_id, utc_day,
               %2$s * count(*), min(slice_start), max(slice_start + make_interval(secs => slice_seconds)),
               %2$s * count(contacts_queued), %2$s * COALESCE(sum(contacts_queued::numeric), 0),
               %2$s * count(contacts_handled), %2$s * COALESCE(sum(contacts_handled::numeric), 0),
               %2$s * count(contacts_abandoned), %2$s * COALESCE(sum(contacts_abandoned::numeric), 0),
               %2$s * COALESCE(sum((avg_handle_time * contacts_handled)::numeric), 0),
               %2$s * COALESCE(sum(contacts_handled::numeric) FILTER (WHERE avg_handle_time IS NOT NULL), 0),
               %2$s * COALESCE(sum((avg_answer_time * contacts_handled)::numeric), 0),
               %2$s * COALESCE(sum(contacts_handled::numeric) FILTER (WHERE avg_answer_time IS NOT NULL), 0),
               %2$s * COALESCE(sum(contacts_queued::numeric) FILTER (WHERE contacts_abandoned IS NOT NULL), 0),
               CASE WHEN count(*) = 1 THEN max(occupancy) END
        FROM k
        GROUP BY instance_ref, profile_id, local_date, dims_id, utc_day
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
            -- one slice: the one just added (a row left with one slice by a removal is computed again)
            occupancy = CASE WHEN r.intervals + EXCLUDED.intervals = 1
                             THEN CASE WHEN EXCLUDED.intervals > 0 THEN EXCLUDED.occupancy ELSE r.occupancy END END
    ), l AS (
        INSERT INTO kpi_queue_rollup_sl AS r
        SELECT instance_ref, profile_id, local_date, dims_id, utc_day, threshold, %2$s * count(*),
               %2$s * COALESCE(sum(num::numeric), 0), %2$s * COALESCE(sum(den::numeric), 0)
        FROM e
        GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (instance_ref, profile_id, local_date, dims_id, utc_day, threshold) DO UPDATE
        SET slices = r.slices + EXCLUDED.slices,
            answered = r.answered + EXCLUDED.answered,
            queued = r.queued + EXCLUDED.queued
    )%3$s
    SELECT 1 $q$, source, p_sign, CASE
        WHEN p_sign < 0 THEN $q$, o AS (
        INSERT INTO kpi_rollup_old
        SELECT instance_ref, profile_id, local_date, dims_id, utc_day, slice_start, slice_seconds FROM k
    )$q$
        WHEN source LIKE '%%kpi_rollup_pairs%%' THEN $q$, gone AS (
        INSERT INTO kpi_rollup_vanished
        SELECT DISTINCT instance_ref, profile_id, dims_id, utc_day
        FROM (SELECT instance_ref, profile_id, local_date, dims_id, utc_day, slice_start, slice_seconds
              FROM kpi_rollup_old
              EXCEPT
              SELECT instance_ref, profile_id, local_date, dims_id, utc_day, slice_start, slice_seconds
              FROM k) x
    )$q$
        ELSE '' END) USING irefs, starts, secs, pids;
END $$;

-- New slices (nothing stored before): add their contribution.
CREATE FUNCTION collector_kpi_queue_rollup_add(irefs int[], starts timestamptz[], secs int[], pids smallint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM profiles WHERE id = ANY(pids) ORDER BY id FOR SHARE;
    PERFORM collector_kpi_rollup_temp();
    PERFORM collector_kpi_queue_rollup_apply(
        'FROM unnest($1, $2, $3, $4) AS x(i, st, sec, p)
         JOIN metric_values v ON v.instance_ref = x.i AND v.slice_start = x.st AND v.slice_seconds = x.sec
                             AND v.profile_id = x.p', 1, irefs, starts, secs, pids);
END $$;

-- Re-collected slices, their new rows in staging_values, before those replace the stored
-- ones: the (slice, group) pairs whose rows change (new, changed or gone), and their
-- stored contribution subtracted. An identical re-collection changes no pair.
CREATE FUNCTION collector_kpi_queue_rollup_before(irefs int[], starts timestamptz[], secs int[], pids smallint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM profiles WHERE id = ANY(pids) ORDER BY id FOR SHARE;
    PERFORM collector_kpi_rollup_temp();
    DELETE FROM kpi_rollup_pairs;
    DELETE FROM kpi_rollup_old;
    DELETE FROM kpi_rollup_vanished;
    INSERT INTO kpi_rollup_pairs
    WITH stored AS MATERIALIZED (
        SELECT m.instance_ref, m.slice_start, m.slice_seconds, m.profile_id, m.dims_id, m.metric_set_id, m.vals
        FROM unnest(irefs, starts, secs, pids) AS x(i, st, sec, p)
        JOIN metric_values m ON m.instance_ref = x.i AND m.slice_start = x.st
                            AND m.slice_seconds = x.sec AND m.profile_id = x.p
    )
    SELECT DISTINCT instance_ref, slice_start, slice_seconds, profile_id, dims_id
    FROM (
        (SELECT instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id, vals
         FROM staging_values
         EXCEPT
         SELECT * FROM stored)                                  -- new or changed
        UNION ALL
        (SELECT instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id, NULL::float8[]
         FROM stored
         EXCEPT
         SELECT instance_ref, slice_start, slice_seconds, profile_id, dims_id, metric_set_id, NULL::float8[]
         FROM staging_values)                                   -- gone
    ) c;
    IF FOUND THEN
        PERFORM collector_kpi_queue_rollup_apply(
            'FROM kpi_rollup_pairs x
             JOIN metric_values v ON v.instance_ref = x.instance_ref AND v.slice_start = x.slice_start
                                 AND v.slice_seconds = x.slice_seconds AND v.profile_id = x.profile_id
                                 AND v.dims_id = x.dims_id', -1, irefs, starts, secs, pids);
    END IF;
END $$;

-- ... and after: the changed pairs' new contribution added; the groups a pair left
-- computed again (their span may have shrunk); thresholds no slice has any more dropped.
CREATE FUNCTION collector_kpi_queue_rollup_after() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM kpi_rollup_pairs) THEN
        RETURN;
    END IF;
    PERFORM collector_kpi_queue_rollup_apply(
        'FROM kpi_rollup_pairs x
         JOIN metric_values v ON v.instance_ref = x.instance_ref AND v.slice_start = x.slice_start
                             AND v.slice_seconds = x.slice_seconds AND v.profile_id = x.profile_id
                             AND v.dims_id = x.dims_id', 1, NULL, NULL, NULL, NULL);
    FOR g IN SELECT DISTINCT * FROM kpi_rollup_vanished ORDER BY 1, 2, 3, 4 LOOP
        PERFORM collector_kpi_queue_rollup_rebuild(g.instance_ref, g.profile_id, g.dims_id, g.utc_day);
    END LOOP;
    DELETE FROM kpi_queue_rollup_sl r
    USING (SELECT DISTINCT instance_ref, profile_id, local_date, dims_id, utc_day FROM kpi_rollup_old) o
    WHERE r.instance_ref = o.instance_ref AND r.profile_id = o.profile_id AND r.local_date = o.local_date
      AND r.dims_id = o.dims_id AND r.utc_day = o.utc_day AND r.slices = 0;
    DELETE FROM kpi_rollup_pairs;
    DELETE FROM kpi_rollup_old;
    DELETE FROM kpi_rollup_vanished;
END $$;

-- A profile whose time zone changes: its slices' local days moved.
CREATE FUNCTION collector_kpi_rollup_profile_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM collector_kpi_queue_rollup_rebuild(NULL, NEW.id, NULL, NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER kpi_rollup_profile_moved
AFTER UPDATE OF time_zone ON profiles
FOR EACH ROW
WHEN (COALESCE(OLD.time_zone, 'UTC') IS DISTINCT FROM COALESCE(NEW.time_zone, 'UTC'))
EXECUTE FUNCTION collector_kpi_rollup_profile_moved();

-- Retention: a day's roll-up rows go with its partition.
CREATE OR REPLACE FUNCTION collector_drop_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname, to_date(substr(c.relname, 15), 'YYYYMMDD') AS day
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'metric_values' AND c.relname ~ '^metric_values_[0-9]{8}$'
          AND (to_date(substr(c.relname, 15), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        DELETE FROM kpi_queue_rollup WHERE utc_day = part.day;
        DELETE FROM kpi_queue_rollup_sl WHERE utc_day = part.day;
        RETURN NEXT part.relname;
    END LOOP;
END $$;

-- What is stored already.
SELECT collector_kpi_queue_rollup_rebuild(NULL, NULL, NULL, NULL);

CREATE OR REPLACE VIEW kpi_queue_daily AS
WITH t AS (
    -- per group: the counts and sums (threshold NULL) and, beside them, one row per threshold
    SELECT r.instance_ref, r.profile_id, r.local_date AS local_date, d.queue_id, d.channel, d.routing_profile_id,
           NULL::text                                                               AS threshold,
           NULL::numeric                                                            AS sl,
           min(r.period_start)                                                      AS period_start,
           max(r.period_end)                                                        AS period_end,
           sum(r.intervals)::int                                                    AS intervals,
           CASE WHEN sum(r.n_queued) > 0 THEN sum(r.contacts_queued)::float8 END       AS contacts_queued,
           CASE WHEN sum(r.n_handled) > 0 THEN sum(r.contacts_handled)::float8 END     AS contacts_handled,
           CASE WHEN sum(r.n_abandoned) > 0 THEN sum(r.contacts_abandoned)::float8 END AS contacts_abandoned,
           round(sum(r.aht_num) / NULLIF(sum(r.aht_den), 0), 3)::float8               AS avg_handle_time,
           round(sum(r.asa_num) / NULLIF(sum(r.asa_den), 0), 3)::float8               AS avg_answer_time,
           round(100.0 * sum(r.contacts_abandoned) / NULLIF(sum(r.ab_den), 0), 2)::float8 AS abandonment_rate,
           CASE WHEN sum(r.intervals) = 1 THEN max(r.occupancy) END                  AS occupancy
    FROM kpi_queue_rollup r
    JOIN dimension_sets d ON d.id = r.dims_id
    GROUP BY r.instance_ref, r.profile_id, r.local_date, d.queue_id, d.channel, d.routing_profile_id
    UNION ALL
    SELECT r.instance_ref, r.profile_id, r.local_date, d.queue_id, d.channel, d.routing_profile_id,
           r.threshold, round(100.0 * sum(r.answered) / NULLIF(sum(r.queued), 0), 2),
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM kpi_queue_rollup_sl r
    JOIN dimension_sets d ON d.id = r.dims_id
    GROUP BY r.instance_ref, r.profile_id, r.local_date, d.queue_id, d.channel, d.routing_profile_id, r.threshold
), g AS (
    SELECT instance_ref, profile_id, local_date, queue_id, channel, routing_profile_id,
           max(period_start) AS period_start, max(period_end) AS period_end, max(intervals) AS intervals,
           max(contacts_queued) AS contacts_queued, max(contacts_handled) AS contacts_handled,
           max(contacts_abandoned) AS contacts_abandoned,
           jsonb_object_agg(threshold, sl) FILTER (WHERE threshold IS NOT NULL) AS service_level,
           max(avg_handle_time) AS avg_handle_time, max(avg_answer_time) AS avg_answer_time,
           max(abandonment_rate) AS abandonment_rate, max(occupancy) AS occupancy
    FROM t
    GROUP BY instance_ref, profile_id, local_date, queue_id, channel, routing_profile_id
)
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id) AS instance_name,
       p.name                                   AS profile,
       p.api,
       COALESCE(p.time_zone, 'UTC')             AS time_zone,
       g.local_date, g.period_start, g.period_end, g.intervals,
       g.queue_id, q.name AS queue_name, g.channel, g.routing_profile_id, rp.name AS routing_profile_name,
       g.contacts_queued, g.contacts_handled, g.contacts_abandoned, g.service_level,
       g.avg_handle_time, g.avg_answer_time, g.abandonment_rate, g.occupancy
FROM g
JOIN instances i   ON i.ref = g.instance_ref
JOIN profiles p    ON p.id = g.profile_id
LEFT JOIN queues q ON q.instance_ref = g.instance_ref AND q.queue_id = g.queue_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = g.instance_ref AND rp.routing_profile_id = g.routing_profile_id;

CREATE OR REPLACE VIEW kpi_queue_weekly AS
WITH t AS (
    -- per group: the counts and sums (threshold NULL) and, beside them, one row per threshold
    SELECT r.instance_ref, r.profile_id, date_trunc('week', r.local_date)::date AS local_week, d.queue_id, d.channel, d.routing_profile_id,
           NULL::text                                                               AS threshold,
           NULL::numeric                                                            AS sl,
           min(r.period_start)                                                      AS period_start,
           max(r.period_end)                                                        AS period_end,
           sum(r.intervals)::int                                                    AS intervals,
           CASE WHEN sum(r.n_queued) > 0 THEN sum(r.contacts_queued)::float8 END       AS contacts_queued,
           CASE WHEN sum(r.n_handled) > 0 THEN sum(r.contacts_handled)::float8 END     AS contacts_handled,
           CASE WHEN sum(r.n_abandoned) > 0 THEN sum(r.contacts_abandoned)::float8 END AS contacts_abandoned,
           round(sum(r.aht_num) / NULLIF(sum(r.aht_den), 0), 3)::float8               AS avg_handle_time,
           round(sum(r.asa_num) / NULLIF(sum(r.asa_den), 0), 3)::float8               AS avg_answer_time,
           round(100.0 * sum(r.contacts_abandoned) / NULLIF(sum(r.ab_den), 0), 2)::float8 AS abandonment_rate,
           CASE WHEN sum(r.intervals) = 1 THEN max(r.occupancy) END                  AS occupancy
    FROM kpi_queue_rollup r
    JOIN dimension_sets d ON d.id = r.dims_id
    GROUP BY r.instance_ref, r.profile_id, date_trunc('week', r.local_date)::date, d.queue_id, d.channel, d.routing_profile_id
    UNION ALL
    SELECT r.instance_ref, r.profile_id, date_trunc('week', r.local_date)::date, d.queue_id, d.channel, d.routing_profile_id,
           r.threshold, round(100.0 * sum(r.answered) / NULLIF(sum(r.queued), 0), 2),
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM kpi_queue_rollup_sl r
    JOIN dimension_sets d ON d.id = r.dims_id
    GROUP BY r.instance_ref, r.profile_id, date_trunc('week', r.local_date)::date, d.queue_id, d.channel, d.routing_profile_id, r.threshold
), g AS (
    SELECT instance_ref, profile_id, local_week, queue_id, channel, routing_profile_id,
           max(period_start) AS period_start, max(period_end) AS period_end, max(intervals) AS intervals,
           max(contacts_queued) AS contacts_queued, max(contacts_handled) AS contacts_handled,
           max(contacts_abandoned) AS contacts_abandoned,
           jsonb_object_agg(threshold, sl) FILTER (WHERE threshold IS NOT NULL) AS service_level,
           max(avg_handle_time) AS avg_handle_time, max(avg_answer_time) AS avg_answer_time,
           max(abandonment_rate) AS abandonment_rate, max(occupancy) AS occupancy
    FROM t
    GROUP BY instance_ref, profile_id, local_week, queue_id, channel, routing_profile_id
)
SELECT i.instance_id,
       COALESCE(i.name, i.alias, i.instance_id) AS instance_name,
       p.name                                   AS profile,
       p.api,
       COALESCE(p.time_zone, 'UTC')             AS time_zone,
       g.local_week, g.period_start, g.period_end, g.intervals,
       g.queue_id, q.name AS queue_name, g.channel, g.routing_profile_id, rp.name AS routing_profile_name,
       g.contacts_queued, g.contacts_handled, g.contacts_abandoned, g.service_level,
       g.avg_handle_time, g.avg_answer_time, g.abandonment_rate, g.occupancy
FROM g
JOIN instances i   ON i.ref = g.instance_ref
JOIN profiles p    ON p.id = g.profile_id
LEFT JOIN queues q ON q.instance_ref = g.instance_ref AND q.queue_id = g.queue_id
LEFT JOIN routing_profiles rp ON rp.instance_ref = g.instance_ref AND rp.routing_profile_id = g.routing_profile_id;
