-- "Newest collection wins" on one clock, the database's: each write records its slices'
-- collection time translated to the database's clock (the writer's clock plus its offset
-- to the database's clock_timestamp(), measured by the writer), and a slice is replaced
-- only by a collection newer on that clock. NULL (rows from before): last_collected_at.
ALTER TABLE collected_slices ADD COLUMN ordered_at timestamptz;
