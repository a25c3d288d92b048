-- Receipts of analytics inputs (recorded by meters) and the days released per analytics kind.
-- Portable SQL (SQLite and PostgreSQL), like the rest of this directory. See
-- key-authority/src/analytics/ for the policy these tables serve.

-- One meter's input ciphertexts for one computation: their BLAKE3 digests (hex, in input
-- order, comma-separated), the slot block they were written at and the date of its first slot.
CREATE TABLE analytics_receipts (
    kind TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    slot_offset BIGINT NOT NULL CHECK (slot_offset >= 0),
    slot_count BIGINT NOT NULL CHECK (slot_count >= 1),
    first_day TEXT NOT NULL,
    input_digests TEXT NOT NULL,
    -- 'exact' or 'analytics'; on the analytics lane the ε per reading and readings per day.
    lane TEXT NOT NULL,
    epsilon DOUBLE PRECISION NOT NULL,
    readings_per_day BIGINT NOT NULL,
    recorded_at_us BIGINT NOT NULL,
    PRIMARY KEY (kind, meter_id, input_id)
);

-- One row per released (kind, meter, day): released at most once. Written in the same
-- transaction as the audit entry that granted it (audit_seq). The released values stay here,
-- not in the hashed audit entry.
CREATE TABLE analytics_releases (
    kind TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    day TEXT NOT NULL,
    input_id TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    -- The released score in thousandths.
    score_milli BIGINT NOT NULL,
    flagged BIGINT NOT NULL CHECK (flagged IN (0, 1)),
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (kind, meter_id, day)
);
