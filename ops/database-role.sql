-- The database role connect-collector needs. Run as a superuser or the database owner.
-- The collector owns its schema (it applies its own migrations), so it needs CREATE on
-- the database; readers get a separate role with SELECT on the views only.
CREATE ROLE connect_collector LOGIN PASSWORD :'collector_password';
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO connect_collector;  -- TEMPORARY: the writer's staging table
GRANT USAGE, CREATE ON SCHEMA public TO connect_collector;

CREATE ROLE connect_metrics_reader NOLOGIN;
GRANT CONNECT ON DATABASE :"dbname" TO connect_metrics_reader;
GRANT USAGE ON SCHEMA public TO connect_metrics_reader;
-- after `collector migrate` (as connect_collector):
--   GRANT SELECT ON historical_metrics, historical_metrics_wide, collection_gaps_view,
--         instances, queues, collection_runs TO connect_metrics_reader;
-- usage: psql -v collector_password=... -v dbname=collector -f ops/database-role.sql
