-- Bills released by the key authority: one per (meter, period), in paise, with the sequence
-- of the key authority's audit entry that granted it. Kept in step between sqlite/ and
-- postgres/ (identical here).
CREATE TABLE bills (
    meter_id TEXT NOT NULL REFERENCES meters (meter_id),
    period TEXT NOT NULL,
    amount_paise BIGINT NOT NULL CHECK (amount_paise >= 0),
    closing_sequence BIGINT NOT NULL CHECK (closing_sequence >= 1),
    audit_sequence BIGINT NOT NULL CHECK (audit_sequence >= 1),
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, period)
);
