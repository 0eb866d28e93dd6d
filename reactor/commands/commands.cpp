// config validate, migrate, sync --force.

#include "reactor/commands/command_support.hpp"
#include "reactor/commands/commands.hpp"

namespace etcd_sync {


int command_config_validate(const ConfigLoad& load) {
  if (!load.ok()) {
    for (const auto& e : load.errors) std::cerr << e.to_string() << "\n";
    std::cerr << load.errors.size() << (load.errors.size() == 1 ? " error" : " errors") << "\n";
    return exit_config;
  }
  std::cout << "ok: " << (load.config.source_file.empty() ? std::string("defaults") : load.config.source_file)
            << " is valid\n";
  return exit_ok;
}

namespace {
// Outside the coroutine: g++ 12 mishandles a ?: of class temporaries inside a coroutine body.
std::string migrated_text(int applied) {
  return applied == 0 ? std::string("schema is up to date") : "applied " + std::to_string(applied) + " migration(s)";
}
}  // namespace

int command_migrate(const Config& config) {
  asio::io_context io;
  return run_command(io, [&]() -> asio::awaitable<int> {
    PgConnection pg(io, config.postgresql.conninfo, "migrate", config.postgresql.request_timeout);
    co_await pg.connect(config.etcd.dial_timeout);
    int applied = co_await migrate(pg, config.postgresql.schema);
    std::cout << migrated_text(applied) << " in schema " << config.postgresql.schema << "\n";
    co_return exit_ok;
  });
}

int command_sync_force(const Config& config) {
  asio::io_context io;
  return run_command(io, [&]() -> asio::awaitable<int> {
    PgConnection pg(io, config.postgresql.conninfo, "sync", config.postgresql.request_timeout);
    co_await open_database(pg, config);
    auto result = co_await pg.query(
        "UPDATE etcd_wal SET status = 'pending', retry_count = 0, next_attempt_at = NULL, applied_at = NULL "
        "WHERE status = 'failed'");
    std::cout << "requeued " << result.affected() << " failed row(s)\n";
    co_return exit_ok;
  });
}

}  // namespace etcd_sync
