-- Signed batches: the meter's Ed25519 signatures (its enrolled device key) over the batch
-- statement sent to the utility with the batch and over the billing receipt statement sent to
-- the key authority, made when the batch is built and written in the transaction that queues
-- it. Rows queued before meters signed keep NULL: they are signed from their stored fields
-- when they are sent (Ed25519 is deterministic, so the signature is the one that would have
-- been stored), once the meter is enrolled.
ALTER TABLE outbox ADD COLUMN batch_signature BLOB
    CHECK (batch_signature IS NULL OR length(batch_signature) = 64);
ALTER TABLE outbox ADD COLUMN receipt_signature BLOB
    CHECK (receipt_signature IS NULL OR length(receipt_signature) = 64);
