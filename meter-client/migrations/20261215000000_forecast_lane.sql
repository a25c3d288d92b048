-- The forecast lane (`meter-client forecast` with a model trained on the analytics lane at an
-- ε): each 15-minute reading is noised at most once per mechanism (ε and clamp bound), and
-- every later daily window that holds the reading reuses the stored draw. A reading therefore
-- costs its ε once, however many windows carry it (a day-ahead window holds 8 days), and a
-- rerun never draws fresh noise for a reading whose first draw may have left the meter.
CREATE TABLE forecast_lane_draws (
    -- "discrete-laplace;epsilon=E;sensitivity_wh=D": the mechanism the draw belongs to.
    mechanism TEXT NOT NULL,
    -- The reading's start, local wall-clock time, YYYY-MM-DDTHH:MM:SS (sorts chronologically).
    start_at TEXT NOT NULL,
    -- The clamped reading plus its discrete Laplace noise, in Wh.
    noisy_wh INTEGER NOT NULL,
    PRIMARY KEY (mechanism, start_at)
) WITHOUT ROWID;

-- The forecast lane's privacy accountant per calendar month (a serialized PrivacyAccountant):
-- every draw is charged to its reading's month, in the transaction that stores the draw.
CREATE TABLE forecast_lane_budget (
    -- The month's first day, YYYY-MM-DD.
    period_start TEXT PRIMARY KEY,
    accountant TEXT NOT NULL
);
