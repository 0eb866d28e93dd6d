-- When etcd goes back in time (restored from a snapshot): which cluster the checkpoint belongs
-- to, each time etcd was seen to go back, and the rows of the abandoned timeline.

-- etcd's cluster id (hex, as etcdctl prints it) when the checkpoint was last written; NULL until
-- the mirror first sees it.
ALTER TABLE etcd_sync_checkpoint ADD COLUMN IF NOT EXISTS etcd_cluster_id text;
-- PostgreSQL's system identifier and timeline when the mirror last started on it (NULL: unknown,
-- or the role may not read them). A promoted replica or a point-in-time recovery starts a new
-- timeline; a restore keeps this row as it was, so the change shows.
ALTER TABLE etcd_sync_checkpoint
  ADD COLUMN IF NOT EXISTS pg_system_identifier text,
  ADD COLUMN IF NOT EXISTS pg_timeline bigint;

-- One row per time etcd was seen to go back: README "When a server goes back in time".
CREATE TABLE IF NOT EXISTS etcd_sync_rollbacks (
  id               bigserial   PRIMARY KEY,
  detected_at      timestamptz NOT NULL DEFAULT now(),
  prefix           text        NOT NULL,
  reason           text        NOT NULL,  -- what showed it: a new cluster id, a revision below the checkpoint, ...
  old_cluster_id   text,                  -- the checkpoint's cluster
  new_cluster_id   text        NOT NULL,  -- the cluster etcd-sync found
  checkpoint       bigint      NOT NULL,  -- the mirror's checkpoint when it was seen (revision)
  etcd_revision    bigint      NOT NULL,  -- etcd's current revision then
  kept_through     bigint      NOT NULL,  -- the highest revision whose rows etcd's history still holds
  rows_abandoned   bigint      NOT NULL,  -- rows moved to etcd_abandoned
  wal_taken_away   bigint      NOT NULL DEFAULT 0,  -- etcd_wal rows settled success whose write the restore took away
  caught_up_at     timestamptz            -- when the mirror had mirrored etcd_revision again
);

-- Rows of an abandoned etcd timeline: mirrored from etcd, then taken back by a restore. Never
-- mixed with `etcd`; each names the rollback that set it apart. A key that was in
-- etcd_sync_rejected (not valid UTF-8) keeps its raw bytes in key_bytes and its reason.
CREATE TABLE IF NOT EXISTS etcd_abandoned (
  id              bigserial   PRIMARY KEY,
  rollback_id     bigint      NOT NULL REFERENCES etcd_sync_rollbacks (id),
  ts              timestamptz NOT NULL,
  key             text,                 -- NULL for a rejected key (see key_bytes)
  value           text,
  revision        bigint      NOT NULL,
  tombstone       boolean     NOT NULL,
  value_bytes     bytea,
  create_revision bigint,
  version         bigint,
  lease           bigint,
  key_bytes       bytea,                -- the raw key of a row taken from etcd_sync_rejected
  rejected_reason text,
  CONSTRAINT etcd_abandoned_one_key CHECK ((key IS NULL) <> (key_bytes IS NULL))
);
CREATE INDEX IF NOT EXISTS etcd_abandoned_key_idx ON etcd_abandoned (key, revision);
