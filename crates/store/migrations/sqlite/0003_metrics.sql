-- Outcome metrics from SDKs: per-variant aggregates in time buckets. Rows are appended as
-- batches arrive and merged later by the rollup (compacted = 1 marks a merged row).
CREATE TABLE metric_rows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    flag        TEXT NOT NULL,
    variant     TEXT NOT NULL,
    bucket_ms   INTEGER NOT NULL,
    width_ms    INTEGER NOT NULL,
    compacted   INTEGER NOT NULL DEFAULT 0,
    evaluations INTEGER NOT NULL,
    successes   INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    -- JSON: the latency sketch and the named events.
    latency     TEXT NOT NULL,
    events      TEXT NOT NULL
);
CREATE INDEX metric_rows_by_flag ON metric_rows (environment, flag, bucket_ms);
CREATE INDEX metric_rows_for_rollup ON metric_rows (compacted, width_ms, bucket_ms);

-- Guards that stand on a flag in an environment, outside any release plan.
CREATE TABLE standing_guards (
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    definition  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (flag, environment)
);

-- One row per guard verdict acted on: the key makes the action happen once, whichever
-- replica sees it first.
CREATE TABLE guard_events (
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    event_key   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (flag, environment, event_key)
);
