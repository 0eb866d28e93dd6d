-- Requeues notify from a row-level trigger whose WHEN clause PostgreSQL evaluates without calling
-- the function: the service's own UPDATEs of etcd_wal (attempt marks, outcomes, retries) then cost
-- no trigger call and no transition tables. Only a row going back to 'pending' (sync --force, or an
-- application's own reset) notifies. INSERTs keep the statement-level trigger (one NOTIFY per bulk
-- INSERT).

DROP TRIGGER IF EXISTS etcd_wal_notify_update ON etcd_wal;

CREATE OR REPLACE FUNCTION etcd_wal_notify_requeue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('etcd_changes',
    json_build_object('id', NEW.id, 'key', left(NEW.key, 200), 'count', 1, 'op', 'requeue')::text);
  RETURN NULL;
END $$;

CREATE TRIGGER etcd_wal_notify_requeue AFTER UPDATE OF status ON etcd_wal
  FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
  EXECUTE FUNCTION etcd_wal_notify_requeue();

-- The statement-level function now serves INSERTs only.
CREATE OR REPLACE FUNCTION etcd_wal_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  first_id bigint;
  first_key text;
  pending bigint;
BEGIN
  SELECT min(id), count(*) INTO first_id, pending FROM new_rows WHERE status = 'pending';
  IF pending > 0 THEN
    SELECT left(key, 200) INTO first_key FROM new_rows WHERE id = first_id;
    PERFORM pg_notify('etcd_changes',
      json_build_object('id', first_id, 'key', first_key, 'count', pending, 'op', 'insert')::text);
  END IF;
  RETURN NULL;
END $$;
