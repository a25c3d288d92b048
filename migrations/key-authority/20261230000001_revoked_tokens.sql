-- Tokens revoked by the operator (`key-authority revoke-token`), each written with a granted
-- `revoke-token` audit entry naming the token id. The gate refuses them until they expire;
-- rows stay as the record. See key-authority/src/revocation.rs.
CREATE TABLE revoked_tokens (
    -- The token's `jti`.
    token_id TEXT NOT NULL PRIMARY KEY,
    -- The token's own expiry (Unix microseconds): after it the row need not be loaded.
    expires_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT NOT NULL
);
