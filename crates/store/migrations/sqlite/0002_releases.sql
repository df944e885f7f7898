-- Release plans (one per flag and environment), restore points left by kills and dial-downs,
-- and plan templates. Definitions are JSON text, validated by the API.
CREATE TABLE release_plans (
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    definition  TEXT NOT NULL,
    stage       INTEGER NOT NULL,
    entered_at  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    -- Bumped by every change: a change names the revision it is based on, so that of several
    -- replicas deciding the same advance exactly one commits it.
    revision    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (flag, environment)
);
CREATE INDEX release_plans_by_status ON release_plans (status);

CREATE TABLE restore_points (
    flag        TEXT NOT NULL,
    environment TEXT NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (flag, environment)
);

CREATE TABLE templates (
    name       TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
