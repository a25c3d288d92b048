-- What the key authority released for the `daily` computation (one N4096 ciphertext per meter
-- per day, `seer-daily`; see utility-server/src/daily.rs). Kept in step between sqlite/ and
-- postgres/ (identical here: no binary columns).

-- The next day's forecast, one row per (meter, hour, model): the forecast energy in whole
-- milli-kWh (the key authority rounds to 0.001 kWh and never releases a negative value), the
-- day whose input produced it and the input's evaluation group (for the group totals), and
-- the audit entry that granted it. An hour is stored once per model.
CREATE TABLE daily_forecasts (
    meter_id TEXT NOT NULL,
    -- The forecast hour, YYYY-MM-DDTHH:00 (local meter time).
    hour TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    kwh_milli BIGINT NOT NULL CHECK (kwh_milli >= 0),
    -- The day the meter prepared the input for (YYYY-MM-DD; the forecast is of the next day).
    input_day TEXT NOT NULL,
    input_group BIGINT NOT NULL CHECK (input_group >= 0),
    audit_seq BIGINT NOT NULL CHECK (audit_seq >= 0),
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, hour, model_blake3)
);

-- `daily-results --day D` and the totals per group read by input day.
CREATE INDEX daily_forecasts_by_day ON daily_forecasts (input_day, input_group, hour);

-- The day's anomaly result, one row per (meter, day, model): the score in thousandths, the
-- flag, and for flagged days the explanation as JSON (features with their share, hours, the
-- usual range and the sentence shown to people).
CREATE TABLE daily_anomalies (
    meter_id TEXT NOT NULL,
    -- The day scored, YYYY-MM-DD.
    day TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    score_milli BIGINT NOT NULL,
    flagged BIGINT NOT NULL CHECK (flagged IN (0, 1)),
    explanation TEXT,
    input_group BIGINT NOT NULL CHECK (input_group >= 0),
    audit_seq BIGINT NOT NULL CHECK (audit_seq >= 0),
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, day, model_blake3)
);

CREATE INDEX daily_anomalies_by_day ON daily_anomalies (day, meter_id);
