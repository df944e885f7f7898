-- Dimmer's schema on SQLite. Definitions are stored as JSON text: the engine's model is the
-- schema of a flag, validated by the API before it gets here.
CREATE TABLE environments (
    name       TEXT PRIMARY KEY NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE flags (
    key        TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    version    INTEGER NOT NULL,
    archived   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE segments (
    key        TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The change feed: what each revision of each environment changed, for stream resumption.
CREATE TABLE changes (
    environment TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (environment, revision, kind, key)
);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    environment TEXT,
    flag        TEXT,
    segment     TEXT,
    before      TEXT,
    after       TEXT,
    reason      TEXT
);
CREATE INDEX audit_by_flag ON audit (flag, id);

CREATE TABLE tokens (
    name        TEXT PRIMARY KEY NOT NULL,
    scope       TEXT NOT NULL,
    environment TEXT,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
