-- High availability (README, "Several instances"): one row per instance for `status` and the
-- heartbeat, the leader's epoch per prefix, and the fence every writing transaction of the leader
-- checks before it commits.

-- etcd_sync_service: one row per instance (it held one row for the single service before).
ALTER TABLE etcd_sync_service ADD COLUMN IF NOT EXISTS instance_id text;
UPDATE etcd_sync_service SET instance_id = coalesce(host, 'unknown') WHERE instance_id IS NULL;
ALTER TABLE etcd_sync_service DROP COLUMN IF EXISTS id;  -- and its primary key and CHECK (id = 1)
ALTER TABLE etcd_sync_service ALTER COLUMN instance_id SET NOT NULL;
ALTER TABLE etcd_sync_service ADD PRIMARY KEY (instance_id);
ALTER TABLE etcd_sync_service
  ADD COLUMN IF NOT EXISTS role text,                -- leader | standby
  ADD COLUMN IF NOT EXISTS ha_state text,            -- campaigning | standby | leader | demoting
  ADD COLUMN IF NOT EXISTS epoch bigint,             -- while it leads: its election key's create_revision
  ADD COLUMN IF NOT EXISTS leader_since timestamptz;

-- The epoch of the leader that may write for a prefix: an etcd revision (the create_revision of
-- its election key), so it only grows. A new leader takes it over with "only if greater".
CREATE TABLE IF NOT EXISTS etcd_sync_leader (
  prefix      text        PRIMARY KEY,
  epoch       bigint      NOT NULL,
  instance_id text        NOT NULL,
  since       timestamptz NOT NULL DEFAULT now()
);

-- Called last in every writing transaction of the leader: holds a share lock on the prefix's
-- epoch row until COMMIT (so a takeover's UPDATE waits for it, and it for the takeover), and
-- raises SQLSTATE ES001 when another epoch leads: the transaction rolls back, the leader learns it
-- was fenced.
CREATE OR REPLACE FUNCTION etcd_sync_fence(p_prefix text, p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  current_epoch bigint;
BEGIN
  SELECT epoch INTO current_epoch FROM etcd_sync_leader WHERE prefix = p_prefix FOR SHARE;
  IF current_epoch IS DISTINCT FROM p_epoch THEN
    RAISE EXCEPTION 'fenced: this instance led epoch % of prefix "%", which epoch % has taken over',
      p_epoch, p_prefix, coalesce(current_epoch::text, 'none')
      USING ERRCODE = 'ES001';
  END IF;
END $$;
