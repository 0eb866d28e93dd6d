#include "reactor/ha/epoch.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/loop/logging.hpp"

namespace etcd_sync {

asio::awaitable<bool> take_over_epoch(asio::io_context& io, const Config& config, const LeaderTerm& term) {
  PgConnection pg(io, config.postgresql.conninfo, "leader", config.postgresql.request_timeout);
  co_await open_database(pg, config);
  auto result = co_await pg.query(
      "WITH before AS (SELECT epoch FROM etcd_sync_leader WHERE prefix = $1) "
      "INSERT INTO etcd_sync_leader (prefix, epoch, instance_id) VALUES ($1, $2::bigint, $3) "
      "ON CONFLICT (prefix) DO UPDATE SET epoch = EXCLUDED.epoch, instance_id = EXCLUDED.instance_id, since = now() "
      "WHERE etcd_sync_leader.epoch < EXCLUDED.epoch OR ($4::bigint > 0 AND etcd_sync_leader.epoch > $4::bigint) "
      "RETURNING epoch, (SELECT epoch FROM before)",
      pg_params(PgParam::text(term.prefix), PgParam::int64(term.epoch), PgParam::text(config.ha.instance_id),
                PgParam::int64(term.etcd_revision)));
  pg.close();
  if (result.rows() == 1 && !result.is_null(0, 1) && result.int64(0, 1) > term.epoch)
    log_error("etcd went back in time: the leader epoch PostgreSQL records is above etcd's revision; its leader "
              "leads nowhere now, and this instance takes over with a lower epoch",
              {{"component", "elector"}, {"recorded_epoch", result.int64(0, 1)}, {"epoch", term.epoch},
               {"etcd_revision", term.etcd_revision}});
  co_return result.rows() == 1;
}

}  // namespace etcd_sync
