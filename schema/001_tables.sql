-- The tables of README "Tables" and etcd-sync's own bookkeeping.
-- Runs with search_path set to the configured schema.

-- etcd's history under the prefix: one row per (key, mod_revision); deletes are tombstones.
CREATE TABLE IF NOT EXISTS etcd (
  ts          timestamptz NOT NULL DEFAULT now(),
  key         text        NOT NULL,
  value       text,                -- the value when it is valid UTF-8 without NUL
  revision    bigint      NOT NULL,
  tombstone   boolean     NOT NULL DEFAULT false,
  value_bytes bytea,               -- the value otherwise, losslessly
  PRIMARY KEY (key, revision),
  CONSTRAINT etcd_one_value CHECK (value IS NULL OR value_bytes IS NULL),
  CONSTRAINT etcd_tombstone_has_no_value CHECK (NOT tombstone OR (value IS NULL AND value_bytes IS NULL))
);
CREATE INDEX IF NOT EXISTS etcd_revision_idx ON etcd (revision);

-- Changes bound for etcd, written by applications.
CREATE TABLE IF NOT EXISTS etcd_wal (
  id              bigserial   PRIMARY KEY,
  ts              timestamptz NOT NULL DEFAULT now(),
  key             text        NOT NULL,
  value           text,              -- NULL (with value_bytes NULL) means delete
  revision        bigint,            -- the key's mod_revision the change is based on; NULL = absent
  status          text        NOT NULL DEFAULT 'pending',
  retry_count     integer     NOT NULL DEFAULT 0,
  error_message   text,
  value_bytes     bytea,             -- a value that is not valid UTF-8 or contains NUL
  next_attempt_at timestamptz,       -- set while a transient failure backs off
  applied_at      timestamptz,       -- when status left 'pending'
  attempt_revision bigint,           -- etcd's revision before an attempt whose outcome is not yet known
  CONSTRAINT etcd_wal_status CHECK (status IN ('pending', 'success', 'conflict', 'failed')),
  CONSTRAINT etcd_wal_one_value CHECK (value IS NULL OR value_bytes IS NULL)
);
CREATE INDEX IF NOT EXISTS etcd_wal_pending_idx ON etcd_wal (id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS etcd_wal_pending_key_idx ON etcd_wal (key, id) WHERE status = 'pending';

-- Where the mirror stands: every etcd revision <= revision under prefix is in etcd.
CREATE TABLE IF NOT EXISTS etcd_sync_checkpoint (
  prefix     text        PRIMARY KEY,
  revision   bigint      NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Keys etcd holds that PostgreSQL text cannot (not valid UTF-8, or NUL): kept raw, never dropped.
CREATE TABLE IF NOT EXISTS etcd_sync_rejected (
  id          bigserial   PRIMARY KEY,
  ts          timestamptz NOT NULL DEFAULT now(),
  key_bytes   bytea       NOT NULL,
  revision    bigint      NOT NULL,
  tombstone   boolean     NOT NULL,
  value_bytes bytea,
  reason      text        NOT NULL,
  UNIQUE (key_bytes, revision)
);

-- The running service's state, kept current by the service for `etcd-sync status`.
CREATE TABLE IF NOT EXISTS etcd_sync_service (
  id                 smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  state              text        NOT NULL,  -- starting | running | stopped
  host               text,
  pid                integer,
  version            text,
  started_at         timestamptz,
  heartbeat_at       timestamptz,
  stopped_at         timestamptz,
  etcd_revision      bigint,                -- etcd's current revision when last seen
  mirror_state       text,
  outbox_state       text,
  events_applied     bigint      NOT NULL DEFAULT 0,
  conflicts_resolved bigint      NOT NULL DEFAULT 0,
  resyncs            bigint      NOT NULL DEFAULT 0,
  last_error         text,
  last_error_at      timestamptz
);
