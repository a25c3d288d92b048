-- The utility dashboard (utility-server/src/dashboard/, store/dashboard.rs). Kept in step
-- between sqlite/ and postgres/ (identical here: no binary columns).

-- Bills the key authority refused, as the billing job heard them: one row per refusal (a home
-- may be refused again in a later run), with the key authority's reason as written to its
-- audit log. Shown as "bills refused"; never read by the billing job.
CREATE TABLE bill_refusals (
    meter_id TEXT NOT NULL,
    period TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at_us BIGINT NOT NULL
);

CREATE INDEX bill_refusals_period ON bill_refusals (period, meter_id);

-- The dashboard's reads of batches touch only these columns; covering indexes keep them from
-- walking the rows, whose ciphertext columns come first and are large.
-- Per period and meter: ε spent, batches, last receipt.
CREATE INDEX batches_dashboard_period
    ON batches (period, meter_id, epsilon_spent, received_at_us);
-- Per meter: the last batch received.
CREATE INDEX batches_dashboard_meter_received ON batches (meter_id, received_at_us);
-- Ingest status: batches received per hour.
CREATE INDEX batches_dashboard_received ON batches (received_at_us, meter_id);
