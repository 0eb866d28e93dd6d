#include "reactor/engine/database.hpp"

namespace etcd_sync {

std::string quote_identifier(const std::string& name) {
  std::string quoted = "\"";
  for (char c : name) quoted += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::string quote_literal(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += (c == '\'') ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

asio::awaitable<void> open_database(PgConnection& pg, const Config& config) {
  co_await pg.connect(config.etcd.dial_timeout);
  co_await use_schema(pg, config.postgresql.schema, false);
  // A frozen leader must not hold a fence's share lock (or any other) for ever: the server ends a
  // session idle inside a transaction for longer than the election's ttl.
  co_await pg.query("SELECT set_config('idle_in_transaction_session_timeout', $1, false)",
                    pg_params(PgParam::text(std::to_string(config.ha.ttl.count()))));
}

asio::awaitable<void> use_schema(PgConnection& pg, const std::string& schema, bool create) {
  if (create) co_await pg.execute_script("CREATE SCHEMA IF NOT EXISTS " + quote_identifier(schema));
  // Short statements only: JIT compilation would cost more than it saves (10-25 ms seen on the
  // outbox's head-of-queue query, whose cost estimate crosses jit_above_cost).
  co_await pg.query("SELECT set_config('search_path', quote_ident($1), false), set_config('jit', 'off', false)",
                    pg_params(PgParam::text(schema)));
}

}  // namespace etcd_sync
