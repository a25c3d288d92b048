-- Load forecasts released by the key authority, one row per (meter, hour, model): the
-- forecast energy of the hour in kWh (rounded to 0.001, never negative), the lane the inputs
-- came from, the ε per reading it cost the meter (0 on the exact lane) and the audit entry
-- that granted it. Kept in step between sqlite/ and postgres/ (identical here: no binary
-- columns).
CREATE TABLE forecasts (
    meter_id TEXT NOT NULL,
    hour TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    kwh DOUBLE PRECISION NOT NULL CHECK (kwh >= 0),
    lane TEXT NOT NULL,
    epsilon DOUBLE PRECISION NOT NULL,
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, hour, model_blake3)
);
