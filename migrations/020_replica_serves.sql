-- Each replica lists the (account, Region) shards its own config can serve
-- ('account/region'), with every heartbeat: it claims only those leases, and a shard some
-- replica wants but no live replica can serve is reported (GET /cluster
-- "unserved_shards", /readyz, collector_shards_unserved) instead of sitting idle.
ALTER TABLE replicas ADD COLUMN serves text[] NOT NULL DEFAULT '{}';
