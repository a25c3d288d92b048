-- Anomaly scores released by the key authority, one row per (meter, day, model): the score
-- rounded to 0.001, the flag, the rolling z-score of the daily total (NULL without a full
-- window) and, for flagged days only, the explanation as JSON (leading features and hours).
-- Kept in step between sqlite/ and postgres/ (identical here: no binary columns).
CREATE TABLE anomaly_scores (
    meter_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    flagged BIGINT NOT NULL CHECK (flagged IN (0, 1)),
    zscore DOUBLE PRECISION,
    explanation TEXT,
    lane TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, day, model_blake3)
);
