-- Meters' signatures, kept with what they cover: the meter's Ed25519 signature over the
-- batch statement (or, for analytics inputs, the analytics receipt statement) and the key
-- authority's certificate of its device key, as received. The utility verifies both before
-- storing; keeping them lets it prove later what it received. NULL for rows stored before
-- meters signed (or by a utility that does not check signatures).
ALTER TABLE batches ADD COLUMN signature BLOB;
ALTER TABLE batches ADD COLUMN meter_certificate BLOB;
ALTER TABLE analytics_inputs ADD COLUMN signature BLOB;
ALTER TABLE analytics_inputs ADD COLUMN meter_certificate BLOB;
