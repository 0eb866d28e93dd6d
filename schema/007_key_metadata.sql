-- etcd's KeyValue metadata beside each revision (README, "Tables"): create_revision, version and
-- lease as etcd reports them (lease 0 for a key without one). NULL on tombstones, and on rows
-- mirrored before these columns existed.
ALTER TABLE etcd
  ADD COLUMN IF NOT EXISTS create_revision bigint,
  ADD COLUMN IF NOT EXISTS version bigint,
  ADD COLUMN IF NOT EXISTS lease bigint;

-- The live keys: each key's latest row, unless that row is a tombstone. A condition on key (a join,
-- a WHERE) reaches the primary key index through the DISTINCT ON, so joining against it costs an
-- index probe per key.
CREATE OR REPLACE VIEW etcd_current AS
  SELECT key, value, value_bytes, revision, create_revision, version, lease
    FROM (SELECT DISTINCT ON (key) key, value, value_bytes, revision, create_revision, version, lease, tombstone
            FROM etcd ORDER BY key, revision DESC) latest
   WHERE NOT tombstone;
