-- The meter -> billing position registry, and the per-cell energy released with each bill.
-- Portable SQL (SQLite and PostgreSQL), like the rest of this directory. See
-- key-authority/src/release/ for the policy.

-- A meter's packing group and position, bound by its first receipt: a later receipt claiming
-- another position is refused, and so is a position already bound to another meter. Release
-- inputs must sit at their meter's registered position.
CREATE TABLE billing_positions (
    meter_id TEXT NOT NULL PRIMARY KEY,
    billing_group BIGINT NOT NULL CHECK (billing_group >= 0),
    billing_position BIGINT NOT NULL CHECK (billing_position >= 0),
    -- The receipt (batch sequence) that bound it, and when.
    first_sequence BIGINT NOT NULL CHECK (first_sequence >= 1),
    bound_at_us BIGINT NOT NULL,
    UNIQUE (billing_group, billing_position)
);

-- Receipts recorded before the registry existed: each meter is bound where its earliest
-- receipt placed it, first recorded first served (a position claimed by two meters stays with
-- the earlier one; the other meter's later receipts and releases are refused).
INSERT INTO billing_positions (meter_id, billing_group, billing_position, first_sequence,
                               bound_at_us)
SELECT r.meter_id, r.billing_group, r.billing_position, r.sequence, r.recorded_at_us
FROM receipts r
WHERE r.sequence = (SELECT MIN(r2.sequence) FROM receipts r2 WHERE r2.meter_id = r.meter_id)
ORDER BY r.recorded_at_us, r.meter_id
ON CONFLICT DO NOTHING;

-- The released bill's energy per tariff cell, whole Wh, comma-separated in cell order (NULL
-- for releases recorded before this column and for kinds without cells).
ALTER TABLE releases ADD COLUMN cell_wh TEXT;
