-- Released hours of noise groups' totals (distributed noise; key-authority/src/group_totals/).
-- Portable SQL (SQLite and PostgreSQL), like the rest of this directory.
--
-- One row per released (noise group, hour): released at most once, written in the same
-- transaction as the audit entry that granted it (audit_seq). The values carry the noise; the
-- privacy cost of the release is epsilon per reading at clamp sensitivity_wh, and min_present
-- is the fewest meters whose lanes were in any interval of the hour. The key authority's
-- top-up is never stored.
CREATE TABLE group_total_releases (
    noise_group BIGINT NOT NULL,
    hour_start TEXT NOT NULL,
    total_wh BIGINT NOT NULL,
    -- Whole Wh per interval, comma-separated (empty when only the hour was asked for).
    interval_wh TEXT NOT NULL,
    min_present BIGINT NOT NULL CHECK (min_present >= 1),
    epsilon DOUBLE PRECISION NOT NULL CHECK (epsilon > 0),
    sensitivity_wh BIGINT NOT NULL CHECK (sensitivity_wh >= 1),
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (noise_group, hour_start)
);
