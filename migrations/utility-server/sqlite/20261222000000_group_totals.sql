-- Distributed noise (DREAM) and the noise groups' released totals. See
-- utility-server/src/store/group_totals.rs and proto/proto/seer/v1/group_totals.proto.

-- What the group-totals job needs to send a stored batch to the key authority exactly as its
-- meter signed it: `start` and `end` as sent (the signature covers the text, which the
-- stored instants and offset do not always reproduce), the billing lane's BLAKE3 (the job
-- sends the digest, not the lane) and the batch's noise plan, field by field as signed.
-- NULL for rows stored before plans existed (and the plan columns for batches without one).
ALTER TABLE batches ADD COLUMN start_text TEXT;
ALTER TABLE batches ADD COLUMN end_text TEXT;
ALTER TABLE batches ADD COLUMN billing_lane_blake3 BLOB;
ALTER TABLE batches ADD COLUMN noise_group_size BIGINT;
ALTER TABLE batches ADD COLUMN noise_tolerated BIGINT;
ALTER TABLE batches ADD COLUMN noise_sensitivity_wh BIGINT;
ALTER TABLE batches ADD COLUMN noise_epsilon DOUBLE PRECISION;
-- The plan's window start as signed, and the same instant in UTC (YYYY-MM-DDTHH:MM:SSZ),
-- which names the window.
ALTER TABLE batches ADD COLUMN noise_window_start TEXT;
ALTER TABLE batches ADD COLUMN noise_window_utc TEXT;
ALTER TABLE batches ADD COLUMN noise_interval_s BIGINT;
ALTER TABLE batches ADD COLUMN noise_window_slots BIGINT;
ALTER TABLE batches ADD COLUMN noise_first_slot BIGINT;
ALTER TABLE batches ADD COLUMN noise_slot_count BIGINT;

-- The job reads a (noise group, window) in (meter, sequence) order.
CREATE INDEX batches_group_window ON batches (billing_group, noise_window_utc, meter_id, sequence);

-- One row per hour of a noise group the key authority released: the hour's total in whole
-- Wh with its noise, the intervals' totals when asked for (comma-separated whole Wh, empty
-- when not), the fewest meters present in an interval of the hour, ε per reading and the
-- scale Δ/ε of each interval's draw, and the audit entry of the request that released it.
-- An hour is released once: the primary key keeps the first release.
CREATE TABLE group_totals (
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    -- Start of the hour, UTC, YYYY-MM-DDTHH:MM:SSZ (text order is time order).
    hour_start TEXT NOT NULL,
    total_wh BIGINT NOT NULL,
    interval_wh TEXT NOT NULL,
    min_present BIGINT NOT NULL CHECK (min_present >= 0),
    epsilon DOUBLE PRECISION NOT NULL,
    noise_scale_wh DOUBLE PRECISION NOT NULL,
    audit_seq BIGINT NOT NULL CHECK (audit_seq >= 0),
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (billing_group, hour_start)
);
