-- etcd_wal's pages are filled to half at INSERT, so the claim's UPDATE of a row (attempt_revision,
-- attempt_token: no indexed column, and status unchanged) finds room on the row's own page and is a
-- heap-only tuple update: no new entry in etcd_wal_pkey, etcd_wal_pending_idx or
-- etcd_wal_pending_key_idx (PostgreSQL docs, "Heap-Only Tuples (HOT)"; CREATE TABLE, fillfactor).
-- The outcome's UPDATE changes status, which the partial indexes name, so it is never HOT.
-- Measured on a 20,000-row burst: 9% of the claims' updates were HOT at fillfactor 100, 96% at 50,
-- and the table ended smaller (1,145 pages against 1,367), since a page's dead versions are pruned
-- in place; the burst ran 9% faster (perf/README.md). The setting applies to pages written from now
-- on; ALTER TABLE ... SET takes a SHARE UPDATE EXCLUSIVE lock, which INSERTs and UPDATEs pass.
ALTER TABLE etcd_wal SET (fillfactor = 50);
