-- Group totals of the daily lane's forecasts, as the key authority released them
-- (`seer.v1.Analytics.ReleaseGroupForecast`; see utility-server/src/daily.rs). Kept in step
-- between sqlite/ and postgres/ (identical here: no binary columns).

-- One row per (evaluation group, hour, model): the exact sum of the released forecasts of the
-- group's homes for the hour, whole milli-kWh, the homes summed (at least the key authority's
-- floor), the day whose inputs produced it (the hour is of the next day) and the audit entry
-- that granted the release. A group's day is released once: stored once, never revised.
CREATE TABLE daily_group_forecasts (
    input_group BIGINT NOT NULL CHECK (input_group >= 0),
    -- The forecast hour, YYYY-MM-DDTHH:00 (local meter time).
    hour TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    kwh_milli BIGINT NOT NULL CHECK (kwh_milli >= 0),
    homes BIGINT NOT NULL CHECK (homes >= 1),
    -- The day the meters prepared their inputs for (YYYY-MM-DD; the forecast is of the next day).
    input_day TEXT NOT NULL,
    audit_seq BIGINT NOT NULL CHECK (audit_seq >= 0),
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (input_group, hour, model_blake3)
);

CREATE INDEX daily_group_forecasts_by_day ON daily_group_forecasts (input_day, input_group, model_blake3);
