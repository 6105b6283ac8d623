-- With replicas, a one-off run is split into one part per (account, Region) shard it
-- touches; each part is executed by the replica that holds that shard's lease.
CREATE TABLE run_parts (
    run_id     bigint NOT NULL REFERENCES collection_runs(id),
    account    text   NOT NULL,
    region     text   NOT NULL,
    status     text   NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'running', 'done', 'failed')),
    claimed_by text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, account, region)
);
CREATE INDEX run_parts_queued ON run_parts (status, run_id);
