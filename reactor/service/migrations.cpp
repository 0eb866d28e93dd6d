#include "reactor/service/migrations.hpp"

#include "reactor/loop/logging.hpp"

#include <exception>

namespace etcd_sync {

asio::awaitable<int> migrate(PgConnection& pg, const std::string& schema) {
  const std::string lock_key = "hashtext(" + quote_literal("etcd-sync migrate " + schema) + ")";
  PgLongStatements long_statements(pg);  // a migration may rewrite a large table, or wait for another's lock
  co_await pg.query("SELECT pg_advisory_lock(" + lock_key + ")");
  int applied = 0;
  std::exception_ptr failure;
  try {
    co_await use_schema(pg, schema, true);
    co_await pg.execute_script(
        "CREATE TABLE IF NOT EXISTS etcd_sync_schema_version ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    auto current = (co_await pg.query("SELECT coalesce(max(version), 0) FROM etcd_sync_schema_version")).int64(0, 0);
    for (const auto& m : schema_migrations()) {
      if (m.version <= current) continue;
      std::string script = std::string("BEGIN;\n") + m.sql +
                           "\n;INSERT INTO etcd_sync_schema_version (version, name) VALUES (" +
                           std::to_string(m.version) + ", " + quote_literal(m.name) + ");\nCOMMIT;";
      try {
        co_await pg.execute_script(std::move(script));
      } catch (const SyncError& error) {
        throw SyncError(error.kind(), "migration " + std::to_string(m.version) + " (" + m.name +
                                          ") failed and was rolled back: " + error.what());
      }
      log_info("schema migration applied", {{"version", m.version}, {"name", m.name}, {"schema", schema}});
      ++applied;
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure && pg.connected()) {
    try {
      co_await pg.execute_script("ROLLBACK");
    } catch (const SyncError&) {
    }
  }
  if (pg.connected()) co_await pg.query("SELECT pg_advisory_unlock(" + lock_key + ")");
  if (failure) std::rethrow_exception(failure);
  co_return applied;
}

}  // namespace etcd_sync
