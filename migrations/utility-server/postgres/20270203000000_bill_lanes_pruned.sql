-- Retention of billing lanes (utility-server/src/store/lifecycle.rs, `utility-server prune`):
-- when the billing lanes of a released bill's (meter, period) were pruned (set to NULL in
-- `batches`), so that a prune visits each released bill once. NULL: not pruned yet. Kept in
-- step between sqlite/ and postgres/ (identical here: no binary columns).
ALTER TABLE bills ADD COLUMN lanes_pruned_at_us BIGINT;

-- The prune reads the bills not pruned yet in (meter, period) order.
CREATE INDEX bills_lanes_unpruned ON bills (meter_id, period) WHERE lanes_pruned_at_us IS NULL;
