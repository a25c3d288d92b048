-- Meter identity: one-time enrolment codes, each meter's enrolled Ed25519 device key, and the
-- meters' signatures kept with the receipts they signed. Portable SQL (SQLite and
-- PostgreSQL), like the rest of this directory. See key-authority/src/enrolment.rs.

-- One-time codes issued by the operator (`key-authority enrolment-code`). Only the code's
-- SHA-256 (hex) is stored; a code is used at most once, before it expires.
CREATE TABLE enrolment_codes (
    code_sha256 TEXT NOT NULL PRIMARY KEY,
    meter_id TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    -- When the code was used (NULL: not yet), and the device key (hex) it enrolled.
    used_at_us BIGINT,
    used_by_key TEXT
);

-- The meter -> device public key binding. A meter has one key at a time; a new code enrols a
-- new key (a replaced device) and clears the revocation.
CREATE TABLE meter_keys (
    meter_id TEXT NOT NULL PRIMARY KEY,
    -- The raw 32-byte Ed25519 public key, lowercase hex.
    device_public_key TEXT NOT NULL,
    -- The certificate's issued-at (Unix seconds): re-issued identically on a repeated enrolment.
    certificate_issued_at BIGINT NOT NULL,
    enrolled_at_us BIGINT NOT NULL,
    -- When the operator revoked the meter (`key-authority revoke-meter`); NULL while valid.
    revoked_at_us BIGINT
);

-- The meter's Ed25519 signature (hex) over the receipt's canonical statement (NULL for
-- receipts recorded before meters signed them).
ALTER TABLE receipts ADD COLUMN signature TEXT;
ALTER TABLE analytics_receipts ADD COLUMN signature TEXT;
