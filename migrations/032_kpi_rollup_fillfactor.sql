-- The KPI roll-up's rows (031) are updated in place by every batch that adds slices to
-- their day: room on their pages lets those updates stay on the page (HOT, no index
-- entries to add), which the writer's upsert is the cheaper for.
ALTER TABLE kpi_queue_rollup SET (fillfactor = 50);
ALTER TABLE kpi_queue_rollup_sl SET (fillfactor = 50);
