-- Analytics kinds with hourly slots (`forecast`) beside daily ones (`anomaly`): a receipt's
-- block starts at a period (a date YYYY-MM-DD, or an hour YYYY-MM-DDTHH:00, by kind), a
-- release row is per period, and its value is the score or the forecast kWh in thousandths.
-- Both forms sort chronologically as text, which the once-per-period check relies on.
ALTER TABLE analytics_receipts RENAME COLUMN first_day TO first_period;
ALTER TABLE analytics_releases RENAME COLUMN day TO period;
ALTER TABLE analytics_releases RENAME COLUMN score_milli TO value_milli;
