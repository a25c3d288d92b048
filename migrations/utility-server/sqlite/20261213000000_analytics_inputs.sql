-- Inputs of deep analytics computations uploaded by meters (`seer.v1.AnalyticsIngest`), kept
-- until the utility's job evaluates them and the key authority decides. Kept in step with
-- ../postgres/: only the ciphertext column type differs (BLOB here, BYTEA there).

-- One row per (kind, meter, input id): the receipt's facts and where the job stands.
CREATE TABLE analytics_inputs (
    kind TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    -- BLAKE3 (hex) of the registered model file the inputs are for.
    model_blake3 TEXT NOT NULL,
    slot_offset BIGINT NOT NULL CHECK (slot_offset >= 0),
    slot_count BIGINT NOT NULL CHECK (slot_count >= 1),
    -- The period of the block's first slot (YYYY-MM-DD or YYYY-MM-DDTHH:00).
    first_period TEXT NOT NULL,
    -- The evaluation group the meter's block belongs to.
    input_group BIGINT NOT NULL CHECK (input_group >= 0),
    inputs BIGINT NOT NULL CHECK (inputs >= 1),
    -- BLAKE3 of the header and the ciphertexts: tells a resend from a conflicting upload.
    content_digest TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    -- pending: not yet decided; released: granted by the key authority (audit_seq set);
    -- refused: refused by it, with its reason.
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'released', 'refused')),
    reason TEXT,
    audit_seq BIGINT,
    decided_at_us BIGINT,
    PRIMARY KEY (kind, meter_id, input_id)
);

-- The job reads the pending inputs of a (kind, model) in (first period, group, offset) order.
CREATE INDEX analytics_inputs_pending
    ON analytics_inputs (kind, model_blake3, status, first_period, input_group, slot_offset);

-- The input ciphertexts, in order: framed, checksummed CKKS ciphertexts (never decrypted here).
CREATE TABLE analytics_input_ciphertexts (
    kind TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    position BIGINT NOT NULL CHECK (position >= 0),
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (kind, meter_id, input_id, position),
    FOREIGN KEY (kind, meter_id, input_id) REFERENCES analytics_inputs (kind, meter_id, input_id)
);
