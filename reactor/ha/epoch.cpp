#include "reactor/ha/epoch.hpp"

#include "reactor/engine/database.hpp"

namespace etcd_sync {

asio::awaitable<bool> take_over_epoch(asio::io_context& io, const Config& config, const LeaderTerm& term) {
  PgConnection pg(io, config.postgresql.conninfo, "leader", config.postgresql.request_timeout);
  co_await open_database(pg, config);
  auto result = co_await pg.query(
      "INSERT INTO etcd_sync_leader (prefix, epoch, instance_id) VALUES ($1, $2::bigint, $3) "
      "ON CONFLICT (prefix) DO UPDATE SET epoch = EXCLUDED.epoch, instance_id = EXCLUDED.instance_id, since = now() "
      "WHERE etcd_sync_leader.epoch < EXCLUDED.epoch RETURNING epoch",
      pg_params(PgParam::text(term.prefix), PgParam::int64(term.epoch), PgParam::text(config.ha.instance_id)));
  pg.close();
  co_return result.rows() == 1;
}

}  // namespace etcd_sync
