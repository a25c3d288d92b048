-- Receipts: every batch's receipt (BLAKE3 of its billing lane) is recorded with the key
-- authority, and a batch leaves `outbox` only when the utility server has acknowledged the
-- batch (its sequence is at most `lane_state.acked_through`) AND the key authority has
-- acknowledged its receipt (`receipt_acked_at` is set).
--
-- `receipt_blake3` is written in the transaction that queues the batch, so the receipt exists
-- as soon as the batch does and can never change afterwards. Rows queued before this
-- migration hold per-batch billing lanes (not period-to-date) and have no receipt: they keep
-- `receipt_blake3` NULL and the client refuses to send them (they must be drained by the
-- version that built them).
ALTER TABLE outbox ADD COLUMN receipt_blake3 BLOB
    CHECK (receipt_blake3 IS NULL OR length(receipt_blake3) = 32);
ALTER TABLE outbox ADD COLUMN receipt_acked_at TEXT;
