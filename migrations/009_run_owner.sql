-- Runs record the replica that executes them (collection_runs.owner): a starting
-- replica takes over only its own unfinished runs (a restart under the same replica id)
-- and those of replicas that are dead by the heartbeat table; adopted_at marks an
-- unfinished run once it has been taken over, so it is resumed at most once.
ALTER TABLE collection_runs ADD COLUMN owner text;
ALTER TABLE collection_runs ADD COLUMN adopted_at timestamptz;
-- Runs a graceful stop left interrupted before this migration: not resumed now.
UPDATE collection_runs SET adopted_at = now() WHERE status = 'interrupted';

-- A part's own counters: a part put back in the queue (SIGTERM, a lease handed over) or
-- taken over from a dead replica starts afresh, and its earlier counts leave the run's.
ALTER TABLE run_parts ADD COLUMN slices_total   int    NOT NULL DEFAULT 0;
ALTER TABLE run_parts ADD COLUMN slices_done    int    NOT NULL DEFAULT 0;
ALTER TABLE run_parts ADD COLUMN rows_written   bigint NOT NULL DEFAULT 0;
ALTER TABLE run_parts ADD COLUMN values_written bigint NOT NULL DEFAULT 0;
