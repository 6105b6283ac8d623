-- Real-time history read by time and by agent: an analyst's query on current_queue_history
-- bounded by snapshot_at, or one agent's snapshots, reads an index, not every partition's rows.
CREATE INDEX current_values_snapshot_at ON current_values (snapshot_at);
CREATE INDEX agent_snapshots_agent ON agent_snapshots (instance_ref, agent_id, slice_start);
CREATE INDEX agent_state_intervals_ended ON agent_state_intervals (ended_at) WHERE ended_at IS NOT NULL;
