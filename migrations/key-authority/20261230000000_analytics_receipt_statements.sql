-- What an analytics receipt's signed statement covers beyond the columns already kept, so
-- that the statement can be rebuilt from the row and the row bound to its audit entry at
-- release (the entry's input digest is the SHA-256 of the statement the meter signed), as
-- billing receipts are. From this migration on, `first_period`, `epsilon` and
-- `readings_per_day` hold the values as signed (on the exact lane ε and readings per day
-- were stored as 0 before). Rows recorded earlier have NULL here: they release nothing, and
-- their meters resend (a resend records a new input id).

-- BLAKE3 (hex) of the registered model the inputs are for ('' when the receipt names none).
ALTER TABLE analytics_receipts ADD COLUMN model_blake3 TEXT;
-- The evaluation group of the block.
ALTER TABLE analytics_receipts ADD COLUMN eval_group BIGINT;
