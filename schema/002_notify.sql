-- NOTIFY etcd_changes when rows become pending. Statement-level, so a bulk INSERT sends one
-- notification, and the payload never carries the value: NOTIFY payloads are limited to 8000 bytes
-- (PostgreSQL docs, NOTIFY), so a trigger that includes the value breaks large inserts.

CREATE OR REPLACE FUNCTION etcd_wal_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  first_id bigint;
  first_key text;
  pending bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT min(id), count(*) INTO first_id, pending FROM new_rows WHERE status = 'pending';
  ELSE
    SELECT min(n.id), count(*) INTO first_id, pending
      FROM new_rows n JOIN old_rows o ON o.id = n.id
     WHERE n.status = 'pending' AND o.status <> 'pending';
  END IF;
  IF pending > 0 THEN
    SELECT left(key, 200) INTO first_key FROM new_rows WHERE id = first_id;
    PERFORM pg_notify('etcd_changes',
      json_build_object('id', first_id, 'key', first_key, 'count', pending, 'op', lower(TG_OP))::text);
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS etcd_wal_notify_insert ON etcd_wal;
CREATE TRIGGER etcd_wal_notify_insert AFTER INSERT ON etcd_wal
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION etcd_wal_notify();

DROP TRIGGER IF EXISTS etcd_wal_notify_update ON etcd_wal;
CREATE TRIGGER etcd_wal_notify_update AFTER UPDATE ON etcd_wal
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION etcd_wal_notify();
