#pragma once
// What every PostgreSQL session of etcd-sync starts with: connect within the configured deadline,
// then select the configured schema.

#include "adapters/pg_connection.hpp"
#include "reactor/config/config.hpp"

#include <string>

namespace etcd_sync {

/// Sets the connection's search_path to `schema` (created when missing when `create` is true) and
/// turns JIT off for the session. Throws SyncError as PgConnection::query.
asio::awaitable<void> use_schema(PgConnection& pg, const std::string& schema, bool create);

/// Connects `pg` (giving up after [etcd] dial_timeout, the one connect deadline of the config),
/// selects the configured schema, which must exist, and sets idle_in_transaction_session_timeout
/// to [ha] ttl. Throws SyncError as PgConnection::connect.
asio::awaitable<void> open_database(PgConnection& pg, const Config& config);

/// `name` quoted as an SQL identifier ("a""b"), and `text` as an SQL string literal ('it''s').
std::string quote_identifier(const std::string& name);
std::string quote_literal(const std::string& text);

}  // namespace etcd_sync
