-- The database roles connect-collector needs. Run as a superuser or the database owner,
-- before the first `collector migrate` (it can also run after: the grants then cover the
-- tables and views that exist, and the default privileges every later one).
-- usage: psql -v collector_password=... -v dbname=collector -f ops/database-role.sql
--
-- connect_collector owns its schema (it applies its own migrations and creates the
-- metric_values partitions as data arrives), so it needs CREATE on the schema.
CREATE ROLE connect_collector LOGIN PASSWORD :'collector_password';
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO connect_collector;  -- TEMPORARY: the writer's staging table
GRANT USAGE, CREATE ON SCHEMA public TO connect_collector;
-- Nobody else creates objects in the schema (already so on PostgreSQL 15 and later).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- connect_metrics_reader: read-only, for analysts and dashboards (grant it to login roles:
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE connect_metrics_reader;).
-- It reads every table and view of the schema: the views (historical_metrics,
-- historical_metrics_wide, collection_gaps_view), the names to join (instances, queues,
-- agents, routing_profiles, hierarchy_groups, profiles), what was collected and how
-- (collected_slices, collection_runs, run_parts, collection_gaps, watermarks), and the
-- rest of the schema's bookkeeping. Nothing in it is secret: DSNs, tokens and AWS keys
-- are never stored.
CREATE ROLE connect_metrics_reader NOLOGIN;
GRANT CONNECT ON DATABASE :"dbname" TO connect_metrics_reader;
GRANT USAGE ON SCHEMA public TO connect_metrics_reader;
-- what exists now (nothing before the first migrate) ...
GRANT SELECT ON ALL TABLES IN SCHEMA public TO connect_metrics_reader;
-- ... and every table, view and partition the collector creates from now on (new
-- migrations' views included), without running this script again
ALTER DEFAULT PRIVILEGES FOR ROLE connect_collector IN SCHEMA public
    GRANT SELECT ON TABLES TO connect_metrics_reader;
