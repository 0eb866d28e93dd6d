-- Which peer each instance cannot reach, and since when, as its heartbeat last recorded it (NULL:
-- reachable). An instance cut from PostgreSQL cannot record that: its heartbeat then grows old,
-- which `etcd-sync status` shows as well.
ALTER TABLE etcd_sync_service
  ADD COLUMN IF NOT EXISTS etcd_unreachable_since timestamptz,
  ADD COLUMN IF NOT EXISTS etcd_unreachable_endpoint text,
  ADD COLUMN IF NOT EXISTS postgresql_unreachable_since timestamptz,
  ADD COLUMN IF NOT EXISTS postgresql_unreachable_endpoint text;
