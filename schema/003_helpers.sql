-- SQL helpers for applications (README, "Tables").

-- The key's live value from the mirror: no row when the key is absent or its latest row a tombstone.
CREATE OR REPLACE FUNCTION etcd_get(p_key text)
RETURNS TABLE (key text, value text, value_bytes bytea, revision bigint, ts timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT e.key, e.value, e.value_bytes, e.revision, e.ts
    FROM (SELECT * FROM etcd WHERE etcd.key = p_key ORDER BY etcd.revision DESC LIMIT 1) e
   WHERE NOT e.tombstone
$$;

-- Every mirrored revision of the key at or after p_min_revision, oldest first, tombstones included.
CREATE OR REPLACE FUNCTION etcd_get_all(p_key text, p_min_revision bigint DEFAULT 0)
RETURNS TABLE (key text, value text, value_bytes bytea, revision bigint, tombstone boolean, ts timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT e.key, e.value, e.value_bytes, e.revision, e.tombstone, e.ts
    FROM etcd e
   WHERE e.key = p_key AND e.revision >= coalesce(p_min_revision, 0)
   ORDER BY e.revision
$$;

-- Queues a put of p_value based on the key's current mirrored revision (NULL when absent or
-- deleted), so a concurrent change in etcd is detected as a conflict. Returns the etcd_wal id.
CREATE OR REPLACE FUNCTION etcd_set(p_key text, p_value text)
RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO etcd_wal (key, value, revision)
  VALUES (p_key, p_value, (SELECT g.revision FROM etcd_get(p_key) g))
  RETURNING id
$$;

-- Queues a delete based on the key's current mirrored revision. Returns the etcd_wal id.
CREATE OR REPLACE FUNCTION etcd_delete(p_key text)
RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO etcd_wal (key, value, revision)
  VALUES (p_key, NULL, (SELECT g.revision FROM etcd_get(p_key) g))
  RETURNING id
$$;
