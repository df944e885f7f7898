-- Dimmer's schema on PostgreSQL (the same shape as on SQLite). Definitions are JSON text,
-- validated by the API before they get here.
CREATE TABLE environments (
    name       TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE flags (
    key        TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version    BIGINT NOT NULL,
    archived   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE segments (
    key        TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE changes (
    environment TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (environment, revision, kind, key)
);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
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
    name        TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    environment TEXT,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
