-- Distributed noise (DREAM): each queued batch keeps the noise plan its analytics lane was
-- built under, as the `seer.v1.NoisePlan` wire encoding (it is signed with the batch and sent
-- with it). Rows queued before plans existed keep NULL: their lanes carry local noise and are
-- sent without a plan, and their stored digests (which cover a plan only when there is one)
-- still verify.
ALTER TABLE outbox ADD COLUMN noise_plan BLOB;

-- The household's privacy ledger: per lane and day, the readings released and the ε per
-- reading they were charged at (a day costs readings × ε). Written in the transaction that
-- commits the charge (a batch, or forecast-lane draws); days before this migration are
-- absent.
CREATE TABLE privacy_ledger (
    -- 'analytics' (the batches' lane) or 'forecast' (the forecast lane's draws).
    lane TEXT NOT NULL CHECK (lane IN ('analytics', 'forecast')),
    -- The readings' local wall-clock date, YYYY-MM-DD.
    day TEXT NOT NULL,
    epsilon_per_reading REAL NOT NULL CHECK (epsilon_per_reading > 0),
    readings INTEGER NOT NULL CHECK (readings >= 0),
    PRIMARY KEY (lane, day, epsilon_per_reading)
) WITHOUT ROWID;
