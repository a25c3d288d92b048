-- The meter client's local state (one SQLite file per meter, in its --state directory).
-- A batch is inserted into `outbox` in the same transaction that advances `lane_state`
-- (sequence, Wh register, slab accumulator, privacy accountant), and deleted only when the
-- utility server has acknowledged it.

-- Who this state belongs to; checked on every start.
CREATE TABLE identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    meter_id TEXT NOT NULL,
    home_index INTEGER NOT NULL CHECK (home_index >= 0),
    tariff_blake3 TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Public keys pinned on first use (trust on first use), one per parameter set.
CREATE TABLE pinned_keys (
    parameter_set_id TEXT PRIMARY KEY,
    public_key_blake3 TEXT NOT NULL,
    public_key_bytes INTEGER NOT NULL,
    pinned_at TEXT NOT NULL
);

-- Where the lanes stand after the last committed batch (a single row).
CREATE TABLE lane_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_sequence INTEGER NOT NULL CHECK (next_sequence >= 1),
    last_reading TEXT,
    register_remainder_j INTEGER NOT NULL CHECK (register_remainder_j >= 0 AND register_remainder_j < 3600),
    period TEXT,
    period_cells TEXT,
    accountant TEXT,
    acked_through INTEGER NOT NULL DEFAULT 0 CHECK (acked_through >= 0 AND acked_through < next_sequence)
);
INSERT INTO lane_state (id, next_sequence, register_remainder_j) VALUES (1, 1, 0);

-- Built batches not yet acknowledged by the utility server.
CREATE TABLE outbox (
    sequence INTEGER PRIMARY KEY CHECK (sequence >= 1),
    period TEXT NOT NULL,
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    utc_offset_s INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    billing_group INTEGER NOT NULL,
    billing_position INTEGER NOT NULL,
    billing_lane BLOB NOT NULL,
    analytics_lane BLOB NOT NULL,
    epsilon_spent REAL NOT NULL,
    digest TEXT NOT NULL,
    queued_at TEXT NOT NULL
);
