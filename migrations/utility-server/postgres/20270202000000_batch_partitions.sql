-- Monthly partitions of `batches` (PostgreSQL only; ../sqlite/ keeps one table and only makes
-- `billing_lane` nullable, as here). See utility-server/src/store/partitions.rs.
--
-- `batches` becomes a table partitioned by LIST (period): one partition `batches_pYYYY_MM` per
-- billing month. Every query of the store names its period by equality (`period = $1`), so
-- the planner reads one partition; a month is the unit of billing and of retention, and a
-- list partition per month needs no range arithmetic on the text period. Partitions of new
-- months are created by the store on demand, under an advisory lock, before the first insert
-- of that month (`Store::insert_batch`).
--
-- The primary key must include the partition key, so it becomes (meter_id, sequence, period).
-- Exactly once per (meter, sequence) is enforced, as before, by the meter's cursor row: every
-- insert locks `meters.last_sequence` and stores only `last + 1` (utility-server/src/store/mod.rs).
--
-- `billing_lane` becomes nullable: NULL once pruned (`utility-server prune`), after the bill
-- of the meter's month was released and the retention passed. The row, its digests,
-- signatures and the analytics lane stay: they are the evidence of what was received.
--
-- Every row, column, constraint and index is kept: the rows are copied into the partitions
-- and the indexes recreated with their names on the partitioned table.

ALTER TABLE batches RENAME TO batches_unpartitioned;

CREATE TABLE batches (
    meter_id TEXT NOT NULL REFERENCES meters (meter_id),
    sequence BIGINT NOT NULL CHECK (sequence >= 1),
    period TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    end_us BIGINT NOT NULL,
    utc_offset_s BIGINT NOT NULL,
    readings BIGINT NOT NULL CHECK (readings >= 1),
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    billing_position BIGINT NOT NULL CHECK (billing_position >= 0),
    billing_lane BYTEA,
    analytics_lane BYTEA NOT NULL,
    epsilon_spent DOUBLE PRECISION NOT NULL CHECK (epsilon_spent >= 0),
    content_digest TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    signature BYTEA,
    meter_certificate BYTEA,
    start_text TEXT,
    end_text TEXT,
    billing_lane_blake3 BYTEA,
    noise_group_size BIGINT,
    noise_tolerated BIGINT,
    noise_sensitivity_wh BIGINT,
    noise_epsilon DOUBLE PRECISION,
    noise_window_start TEXT,
    noise_window_utc TEXT,
    noise_interval_s BIGINT,
    noise_window_slots BIGINT,
    noise_first_slot BIGINT,
    noise_slot_count BIGINT,
    CHECK (start_us < end_us)
) PARTITION BY LIST (period);

-- One partition per month already stored (periods are validated YYYY-MM).
DO $$
DECLARE
    month TEXT;
BEGIN
    FOR month IN SELECT DISTINCT period FROM batches_unpartitioned LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF batches FOR VALUES IN (%L)',
            'batches_p' || replace(month, '-', '_'),
            month
        );
    END LOOP;
END
$$;

INSERT INTO batches (meter_id, sequence, period, start_us, end_us, utc_offset_s, readings,
    billing_group, billing_position, billing_lane, analytics_lane, epsilon_spent,
    content_digest, received_at_us, signature, meter_certificate, start_text, end_text,
    billing_lane_blake3, noise_group_size, noise_tolerated, noise_sensitivity_wh, noise_epsilon,
    noise_window_start, noise_window_utc, noise_interval_s, noise_window_slots,
    noise_first_slot, noise_slot_count)
SELECT meter_id, sequence, period, start_us, end_us, utc_offset_s, readings,
    billing_group, billing_position, billing_lane, analytics_lane, epsilon_spent,
    content_digest, received_at_us, signature, meter_certificate, start_text, end_text,
    billing_lane_blake3, noise_group_size, noise_tolerated, noise_sensitivity_wh, noise_epsilon,
    noise_window_start, noise_window_utc, noise_interval_s, noise_window_slots,
    noise_first_slot, noise_slot_count
FROM batches_unpartitioned;

DROP TABLE batches_unpartitioned;

ALTER TABLE batches ADD CONSTRAINT batches_pkey PRIMARY KEY (meter_id, sequence, period);
CREATE INDEX batches_period_group ON batches (period, billing_group, meter_id, sequence);
CREATE INDEX batches_meter_period ON batches (meter_id, period);
CREATE INDEX batches_group_window ON batches (billing_group, noise_window_utc, meter_id, sequence);
CREATE INDEX batches_dashboard_period
    ON batches (period, meter_id, epsilon_spent, received_at_us);
CREATE INDEX batches_dashboard_meter_received ON batches (meter_id, received_at_us);
CREATE INDEX batches_dashboard_received ON batches (received_at_us, meter_id);
