#pragma once
// `etcd-sync start`: one io_context on the main thread runs the mirror, the outbox, the listener,
// signals and timers. SIGINT/SIGTERM stop gracefully; SIGHUP reloads the configuration file.

#include "adapters/etcd_client.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/config/config.hpp"
#include "reactor/service/listener.hpp"
#include "reactor/service/metrics.hpp"
#include "reactor/mirror/mirror.hpp"
#include "reactor/outbox/outbox.hpp"
#include "reactor/service/sync_stats.hpp"

#include <boost/asio/signal_set.hpp>

#include <memory>

namespace etcd_sync {

/// Process exit codes (CONTRACT.md §2).
enum ExitCode : int {
  exit_ok = 0,
  exit_config = 1,
  exit_connect = 2,
  exit_permission = 3,
  exit_runtime = 4,
};

/// Maps a startup failure to its exit code: permission_denied -> 3, transient (unreachable) -> 2,
/// anything else -> 4.
int exit_code_for(const SyncError& error);

/// Builds etcd client options from [etcd].
EtcdClientOptions etcd_options(const EtcdConfig& config);

class Service {
 public:
  /// `overrides` are kept to re-read the same file with the same flags on SIGHUP.
  Service(Config config, ConfigOverrides overrides, bool dry_run);
  ~Service();

  /// Connects, migrates the schema when needed, runs until SIGINT/SIGTERM. Returns the exit code.
  int run();

 private:
  asio::awaitable<int> start_up();
  asio::awaitable<void> run_engines();
  void build_engines();
  void stop_engines();
  void on_signal(int signal_number);
  void reload();
  void begin_stop();
  bool ready() const;
  void pet_watchdog();

  asio::io_context io_;
  Config config_;
  ConfigOverrides overrides_;
  bool dry_run_;
  GrpcBridge bridge_;
  asio::signal_set signals_;
  asio::steady_timer force_stop_;
  asio::steady_timer watchdog_;
  SyncStats stats_;
  std::unique_ptr<EtcdClient> etcd_;
  std::unique_ptr<Mirror> mirror_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<MetricsServer> metrics_;
  int engines_running_ = 0;
  Wakeup engines_done_;
  bool stopping_ = false;
  bool restart_pending_ = false;
  int exit_code_ = exit_ok;
};

}  // namespace etcd_sync
