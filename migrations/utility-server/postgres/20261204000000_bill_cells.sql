-- The energy of each released bill per tariff cell (slab, and time-of-use band where the
-- tariff has bands), in whole Wh, as the key authority released it with the bill, with the
-- cell's label at the time of release (`0-50 kWh`, `50-100 kWh peak`). Written in the same
-- transaction as the bill. Kept in step between sqlite/ and postgres/ (identical here).
CREATE TABLE bill_cells (
    meter_id TEXT NOT NULL,
    period TEXT NOT NULL,
    -- The cell's index in the tariff's cell order (slab-major).
    cell BIGINT NOT NULL CHECK (cell >= 0),
    label TEXT NOT NULL,
    wh BIGINT NOT NULL CHECK (wh >= 0),
    PRIMARY KEY (meter_id, period, cell),
    FOREIGN KEY (meter_id, period) REFERENCES bills (meter_id, period)
);
