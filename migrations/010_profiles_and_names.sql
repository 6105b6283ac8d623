-- What SQL needs to know of a profile and of the resources it names:
--  * profiles: the metric API, the interval (as configured, its nominal seconds and the
--    API's period name) and the time zone its slices align to, written when a collector
--    registers the profile (NULL for a profile not registered since this migration);
--  * instances.name: the name the config gives an instance ([[instances]] name);
--  * agents: the routing profile and hierarchy group SearchUsers returns.
ALTER TABLE profiles
    ADD COLUMN api              text,
    ADD COLUMN "interval"       text,
    ADD COLUMN interval_seconds int,
    ADD COLUMN period           text,
    ADD COLUMN time_zone        text,
    ADD COLUMN registered_at    timestamptz;

ALTER TABLE instances ADD COLUMN name text;

ALTER TABLE agents
    ADD COLUMN routing_profile_id text,
    ADD COLUMN hierarchy_group_id text;
