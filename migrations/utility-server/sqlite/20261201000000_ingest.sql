-- The utility server's ciphertext store (SQLite). Kept in step with ../postgres/: the same
-- versions, tables, columns and constraints; only the ciphertext column type differs (BLOB
-- here, BYTEA there). See utility-server/src/store/mod.rs. Integers are BIGINT, instants
-- microseconds since the Unix epoch (UTC), digests lowercase hex.

-- One row per meter that has stored a batch. `last_sequence` is the ingest cursor: the highest
-- sequence stored for the meter (sequences have no gaps), advanced in the same transaction as
-- the batch it counts.
CREATE TABLE meters (
    meter_id TEXT NOT NULL PRIMARY KEY,
    first_seen_us BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL DEFAULT 0 CHECK (last_sequence >= 0)
);

-- One row per stored batch, exactly once per (meter, sequence).
CREATE TABLE batches (
    meter_id TEXT NOT NULL REFERENCES meters (meter_id),
    sequence BIGINT NOT NULL CHECK (sequence >= 1),
    -- The billing period, YYYY-MM.
    period TEXT NOT NULL,
    -- The interval [start, end) and the UTC offset the meter stated for it.
    start_us BIGINT NOT NULL,
    end_us BIGINT NOT NULL,
    utc_offset_s BIGINT NOT NULL,
    readings BIGINT NOT NULL CHECK (readings >= 1),
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    billing_position BIGINT NOT NULL CHECK (billing_position >= 0),
    -- The two lanes: framed, checksummed CKKS ciphertexts (never decrypted here).
    billing_lane BLOB NOT NULL,
    analytics_lane BLOB NOT NULL,
    epsilon_spent DOUBLE PRECISION NOT NULL CHECK (epsilon_spent >= 0),
    -- BLAKE3 of the batch's content (hex): tells a resend from a conflicting upload.
    content_digest TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, sequence),
    CHECK (start_us < end_us)
);

-- The billing job reads a (period, group) in (meter, sequence) order.
CREATE INDEX batches_period_group ON batches (period, billing_group, meter_id, sequence);
-- Usage summaries read a (meter, period).
CREATE INDEX batches_meter_period ON batches (meter_id, period);
