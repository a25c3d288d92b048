-- Group totals of the daily lane's forecasts (key-authority/src/analytics/group_forecast.rs;
-- `seer.v1.Analytics.ReleaseGroupForecast`). Portable SQL (SQLite and PostgreSQL), like the
-- rest of this directory.

-- Each granted `daily` meter-day with a forecast: the 24 released hours in whole thousandths
-- of kWh (as released, after rounding), comma-separated, kept for the group's aggregate. The
-- group is the one the meter signed in its receipt (analytics_receipts.eval_group), never one
-- the utility names; day is the forecast's day (the day after the input's). Written in the same
-- transaction as the `daily` audit entry that granted it (audit_seq).
CREATE TABLE daily_group_forecasts (
    meter_id TEXT NOT NULL,
    day TEXT NOT NULL,
    eval_group BIGINT NOT NULL CHECK (eval_group >= 0),
    model_blake3 TEXT NOT NULL,
    hours_milli TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    recorded_at_us BIGINT NOT NULL,
    PRIMARY KEY (meter_id, day, model_blake3)
);

CREATE INDEX daily_group_forecasts_by_group ON daily_group_forecasts (eval_group, day, model_blake3);

-- One row per released (group, day, model): released at most once, with the homes summed and
-- the 24 hourly totals (whole thousandths of kWh, comma-separated), written in the same
-- transaction as the granted `daily-group-forecast` audit entry (audit_seq).
CREATE TABLE daily_group_forecast_releases (
    eval_group BIGINT NOT NULL CHECK (eval_group >= 0),
    day TEXT NOT NULL,
    model_blake3 TEXT NOT NULL,
    homes BIGINT NOT NULL CHECK (homes >= 1),
    hours_milli TEXT NOT NULL,
    audit_seq BIGINT NOT NULL,
    released_at_us BIGINT NOT NULL,
    PRIMARY KEY (eval_group, day, model_blake3)
);
