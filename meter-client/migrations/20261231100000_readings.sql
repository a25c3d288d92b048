-- The household's own readings, as batched: one row per reading, written in the transaction
-- that commits its batch (`StateStore::commit_batch_signed`), so the household dashboard and
-- the Green Button export show exactly what was queued — never a reading whose batch was not
-- committed, never miss one that was. Rows stay after the batch leaves the outbox.
CREATE TABLE readings (
    -- The interval's start, local wall-clock time, YYYY-MM-DDTHH:MM:SS.
    start_at TEXT PRIMARY KEY NOT NULL,
    -- The interval's length in seconds.
    interval_s INTEGER NOT NULL CHECK (interval_s > 0),
    -- Whole Wh after the meter's register (what the billing lane carries).
    wh INTEGER NOT NULL CHECK (wh >= 0),
    -- What the analytics lane carried for this interval: min(wh, Δ) plus this meter's noise
    -- share (may be negative). NULL when the batch had no analytics lane value for it.
    analytics_wh INTEGER,
    -- The batch that carried it.
    sequence INTEGER NOT NULL CHECK (sequence > 0)
) WITHOUT ROWID;

CREATE INDEX readings_by_sequence ON readings (sequence);
