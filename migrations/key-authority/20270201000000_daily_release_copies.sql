-- What each granted `daily` home-day released, kept to answer an exact retry
-- (key-authority/src/analytics/retry.rs): a utility worker killed between the key authority's
-- commit and its own store asks again with the same meter, day, model and inputs, and gets
-- this copy back (audited as `daily.retry`; nothing is decrypted again). Portable SQL (SQLite
-- and PostgreSQL), like the rest of this directory.
--
-- input_digest is the granted entry's input digest (SHA-256 over the BLAKE3 of each input
-- ciphertext); released is the release as it left (JSON, floats as their IEEE-754 bits, so it
-- is returned bit for bit). Written in the same transaction as the `daily` audit entry that
-- granted it (audit_seq); verification checks that entry exists with this meter and digest.
CREATE TABLE daily_release_copies (
    meter_id TEXT NOT NULL,
    period TEXT NOT NULL,
    input_id TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    released TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, period)
);
