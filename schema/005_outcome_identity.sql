-- Outcomes land only on their own row (README, "How it works"): every claim gives the rows it takes
-- a fresh token, and the outcome UPDATE matches id, key, status 'pending' and that token. After a
-- lossy PostgreSQL failover reissues an id, an outcome held in memory for the lost row matches no
-- row and is dropped (and logged) instead of being written onto the new one.
ALTER TABLE etcd_wal ADD COLUMN IF NOT EXISTS attempt_token bigint;

-- The etcd_sync_wal_rows{status="failed"} gauge counts failed rows every few seconds: along this
-- index instead of the whole table.
CREATE INDEX IF NOT EXISTS etcd_wal_failed_idx ON etcd_wal (id) WHERE status = 'failed';
