-- The key authority's audit log: an append-only, hash-chained list of every release request,
-- and the signed head of the chain. Portable SQL: the same file runs on SQLite and PostgreSQL
-- (integers are BIGINT, hashes and digests lowercase hex TEXT, instants microseconds since the
-- Unix epoch), so both backends share one migration history. See key-authority/src/audit/ for
-- the hash encoding and what each check protects against.

CREATE TABLE audit_entries (
    -- 1, 2, 3, ... without gaps; part of the hashed content.
    seq BIGINT NOT NULL PRIMARY KEY CHECK (seq >= 1),
    -- When the entry was appended (microseconds since the Unix epoch, UTC; never decreasing).
    recorded_at_us BIGINT NOT NULL,
    -- The verified token's subject and role; both NULL when the request had no valid token.
    caller_subject TEXT,
    caller_role TEXT,
    -- What was asked for ("bill", ...), the meter and period it named.
    request_kind TEXT NOT NULL,
    meter_id TEXT,
    period TEXT,
    -- SHA-256 (hex) of the input the request named, when it named one.
    input_digest TEXT,
    -- "granted" or "refused"; the reason is set exactly for refusals.
    decision TEXT NOT NULL,
    reason TEXT,
    -- entry_hash of the previous entry (64 zeros for the first), and this entry's hash.
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);

CREATE INDEX audit_entries_meter ON audit_entries (meter_id, seq);
CREATE INDEX audit_entries_kind ON audit_entries (request_kind, seq);
CREATE INDEX audit_entries_recorded_at ON audit_entries (recorded_at_us);

-- The chain head: the last entry's sequence and hash, updated in the same transaction as each
-- append and signed (Ed25519, hex) with the key authority's signing key. A deleted last entry
-- leaves the head pointing past the end of the chain; a rewritten head needs the key.
CREATE TABLE audit_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL,
    last_hash TEXT NOT NULL,
    key_id TEXT,
    signature TEXT
);

INSERT INTO audit_head (id, last_seq, last_hash, key_id, signature)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', NULL, NULL);
