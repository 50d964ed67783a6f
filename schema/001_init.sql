-- 001_init.sql: the control server's first schema (server/store.c applies it at open, in one
-- transaction with PRAGMA user_version = 1; a migration file holds no BEGIN or COMMIT of its own).
-- Times are unix milliseconds; JSON documents are stored as compact text.

CREATE TABLE experiments (
    id               INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: artifact folders, links
    name             TEXT,                               -- NULL: shown as KIND-ID
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    priority         INTEGER NOT NULL DEFAULT 0,         -- higher first
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    config           TEXT NOT NULL,                      -- the effective config, keys sorted
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,                            -- first lease since creation or retry
    finished_at      INTEGER,
    error            TEXT,                               -- the last status change's reason
    worker_id        TEXT,                               -- the lease holder (kept once finished)
    lease_expires_at INTEGER,                            -- while running
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    parent_id        INTEGER,                            -- clone source; may since be deleted
    progress         TEXT,                               -- the last progress object
    latest           TEXT NOT NULL DEFAULT '{}',         -- {metric: last value}
    idempotency_key  TEXT UNIQUE
) STRICT;
CREATE INDEX experiments_queue ON experiments (status, priority DESC, id);
CREATE INDEX experiments_status ON experiments (status, id);
CREATE INDEX experiments_kind ON experiments (kind, id);
CREATE INDEX experiments_running ON experiments (worker_id) WHERE status = 'running';

-- One increasing id over every experiment: Server-Sent Events resume from it, so AUTOINCREMENT
-- keeps ids of deleted events from coming back.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    worker_seq    INTEGER,                               -- NULL for the server's own events
    type          TEXT NOT NULL
                  CHECK (type IN ('status', 'metrics', 'log', 'progress', 'artifact')),
    ts            INTEGER NOT NULL,
    data          TEXT NOT NULL,
    UNIQUE (experiment_id, worker_seq)
) STRICT;
CREATE INDEX events_experiment ON events (experiment_id, id);
CREATE INDEX events_type ON events (experiment_id, type, id);

-- One row per number of a metrics event, clustered for per-key reads in iteration order.
-- event_id is no foreign key: its rows go with the experiment's, and a cascade from events would
-- need one more index.
CREATE TABLE metric_points (
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    event_id      INTEGER NOT NULL,
    key           TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    value         REAL NOT NULL,
    PRIMARY KEY (experiment_id, key, iteration, event_id)
) STRICT, WITHOUT ROWID;

-- The files are DATA/artifacts/EXPERIMENT_ID/NAME.
CREATE TABLE artifacts (
    id            INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    iteration     INTEGER,                               -- NULL: none given
    created_at    INTEGER NOT NULL,
    UNIQUE (experiment_id, name)
) STRICT;

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,                      -- "w-" + 16 hex digits
    token_id      INTEGER NOT NULL,                      -- the token that registered it
    name          TEXT,
    backend       TEXT,
    device        TEXT,
    memory_mb     INTEGER,
    threads       INTEGER,
    version       TEXT,
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('read', 'write', 'worker', 'admin')),
    hash       TEXT NOT NULL UNIQUE,                     -- sha256 hex of the secret
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
