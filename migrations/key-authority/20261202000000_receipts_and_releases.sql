-- Receipts of billing-lane batches (recorded by meters) and the results the key authority has
-- released. Portable SQL, like the audit log: BIGINT integers, lowercase hex TEXT digests,
-- instants in microseconds since the Unix epoch, booleans as 0/1 integers. See
-- key-authority/src/release/ for the policy these tables serve.

CREATE TABLE receipts (
    meter_id TEXT NOT NULL,
    -- The batch's sequence (>= 1, per meter, across periods).
    sequence BIGINT NOT NULL CHECK (sequence >= 1),
    -- The billing period, YYYY-MM.
    period TEXT NOT NULL,
    -- BLAKE3 (hex) of the batch's billing-lane ciphertext, as the meter serialized it.
    billing_digest TEXT NOT NULL,
    -- The packing group and the position in it the lane was encoded for.
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    billing_position BIGINT NOT NULL CHECK (billing_position >= 0),
    -- 1 on the meter's last batch of the period (its lane holds the whole period), else 0.
    closes_period BIGINT NOT NULL CHECK (closes_period IN (0, 1)),
    recorded_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, sequence)
);

-- The release path looks up a meter's last receipt of a period.
CREATE INDEX receipts_meter_period ON receipts (meter_id, period, sequence);

-- One row per released result: a (kind, meter, period) is released at most once. Written in
-- the same transaction as the audit entry that grants it (audit_seq).
CREATE TABLE releases (
    kind TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    period TEXT NOT NULL,
    -- The receipt (batch sequence) whose input was released.
    receipt_sequence BIGINT NOT NULL,
    -- The released amount in the kind's unit (paise for bills).
    amount BIGINT NOT NULL,
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (kind, meter_id, period)
);
