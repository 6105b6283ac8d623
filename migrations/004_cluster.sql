-- Scale-out: replicas share the fleet through leases on (account, Region) shards.

CREATE TABLE replicas (
    id           text PRIMARY KEY,
    api_url      text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_leases (
    account     text        NOT NULL,
    region      text        NOT NULL,
    owner       text,
    generation  bigint      NOT NULL DEFAULT 0,  -- fencing token: grows on every change of owner
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz,
    takeovers   int         NOT NULL DEFAULT 0,  -- claims of a lease whose owner had not released it
    PRIMARY KEY (account, region)
);
