-- The live source's inbox (`meter-client run --source mqtt://...`, meter-client/src/mqtt):
-- every register sample received from the broker, committed BEFORE the MQTT message is
-- acknowledged, so a crash between receipt and commit gets the message redelivered and a
-- crash after the commit loses nothing. A redelivery of a stored sample is a no-op (the
-- primary key). Batches are derived from these rows (quarter-hour register differences).
CREATE TABLE mqtt_inbox (
    -- The MQTT topic the sample arrived on (one source: one topic).
    topic TEXT NOT NULL,
    -- The payload's own time: the meter's wall-clock time, YYYY-MM-DDTHH:MM:SS.
    message_time TEXT NOT NULL,
    -- The cumulative import register the payload states, in units of 0.01 Wh (36 J):
    -- Tasmota's ENERGY.Total, or DSMR's electricity_delivered_1 + electricity_delivered_2.
    register_cwh INTEGER NOT NULL CHECK (register_cwh >= 0),
    -- When the meter committed it (UTC, RFC 3339).
    received_at TEXT NOT NULL,
    PRIMARY KEY (topic, message_time)
);

-- Per topic: messages refused as malformed (logged, acknowledged, never stored as samples)
-- and redeliveries of stored samples.
CREATE TABLE mqtt_counters (
    topic TEXT PRIMARY KEY NOT NULL,
    malformed INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0
);
