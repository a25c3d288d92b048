-- Version-mate of ../postgres/20270202000000_batch_partitions.sql, which partitions `batches`
-- by month (PostgreSQL only: SQLite keeps one table in its one file, and its primary key stays
-- (meter_id, sequence)). What both do: `billing_lane` becomes nullable, NULL once pruned
-- (`utility-server prune`, after the bill of the meter's month was released and the retention
-- passed); the row, its digests, signatures and the analytics lane stay as evidence.
--
-- SQLite cannot drop a NOT NULL constraint in place: the table is rebuilt with every row,
-- column, constraint and index.

CREATE TABLE batches_rebuilt (
    meter_id TEXT NOT NULL REFERENCES meters (meter_id),
    sequence BIGINT NOT NULL CHECK (sequence >= 1),
    period TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    end_us BIGINT NOT NULL,
    utc_offset_s BIGINT NOT NULL,
    readings BIGINT NOT NULL CHECK (readings >= 1),
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    billing_position BIGINT NOT NULL CHECK (billing_position >= 0),
    billing_lane BLOB,
    analytics_lane BLOB NOT NULL,
    epsilon_spent DOUBLE PRECISION NOT NULL CHECK (epsilon_spent >= 0),
    content_digest TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    signature BLOB,
    meter_certificate BLOB,
    start_text TEXT,
    end_text TEXT,
    billing_lane_blake3 BLOB,
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
    PRIMARY KEY (meter_id, sequence),
    CHECK (start_us < end_us)
);

INSERT INTO batches_rebuilt (meter_id, sequence, period, start_us, end_us, utc_offset_s, readings,
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
FROM batches;

DROP TABLE batches;
ALTER TABLE batches_rebuilt RENAME TO batches;

CREATE INDEX batches_period_group ON batches (period, billing_group, meter_id, sequence);
CREATE INDEX batches_meter_period ON batches (meter_id, period);
CREATE INDEX batches_group_window ON batches (billing_group, noise_window_utc, meter_id, sequence);
CREATE INDEX batches_dashboard_period
    ON batches (period, meter_id, epsilon_spent, received_at_us);
CREATE INDEX batches_dashboard_meter_received ON batches (meter_id, received_at_us);
CREATE INDEX batches_dashboard_received ON batches (received_at_us, meter_id);
