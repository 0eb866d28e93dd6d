#pragma once
// `etcd-sync start`: one io_context on the main thread runs everything. The engines of one
// configuration generation (mirror, outbox, listener, one etcd client) run inside a Gate; SIGHUP
// either hands in-place settings to them or replaces the whole generation; SIGINT/SIGTERM stop it.
// The lifecycle is Service::lifecycle() in service.cpp.

#include "adapters/etcd_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/wakeup.hpp"

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <vector>

namespace etcd_sync {

class Mirror;
class Outbox;
class Listener;
class MetricsServer;

/// Process exit codes (README, "Commands").
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

/// Whether `b` can be applied to a generation started with `a` without new connections: every
/// [postgresql], [etcd] and [ha] setting and the direction are the same (the rest applies in place).
bool same_connections(const Config& a, const Config& b);

class Service {
 public:
  /// `overrides` are kept to re-read the same file with the same flags on SIGHUP.
  Service(Config config, ConfigOverrides overrides, bool dry_run);
  ~Service();

  /// Connects, migrates the schema when needed, runs until SIGINT/SIGTERM. Returns the exit code.
  int run();

 private:
  /// One configuration generation: the snapshot it runs on, its etcd client, its engines, and the
  /// gate their coroutines run in.
  struct Generation {
    explicit Generation(asio::io_context& io);
    ~Generation();
    std::shared_ptr<const Config> config;
    std::unique_ptr<EtcdClient> etcd;
    std::unique_ptr<Mirror> mirror;
    std::unique_ptr<Outbox> outbox;
    std::unique_ptr<Listener> listener;
    std::vector<Engine*> engines;  ///< the three above that exist, in start order
    Gate gate;
  };

  asio::awaitable<void> lifecycle();
  asio::awaitable<int> start_up();
  std::unique_ptr<Generation> build_generation(std::shared_ptr<const Config> config);
  void start_generation(Generation& generation);
  /// Asks every engine to stop, cancels etcd calls still running after 1.5 s, and waits on the gate.
  asio::awaitable<void> stop_generation(Generation& generation);
  void start_metrics(const std::string& listen);
  /// Stops `server` and waits until its connections have ended; it is destroyed after.
  asio::awaitable<void> retire_metrics(std::unique_ptr<MetricsServer> server);
  void on_signal(int signal_number);
  void reload();
  void request_stop(int exit_code);
  bool ready() const;
  void pet_watchdog();

  asio::io_context io_;
  std::shared_ptr<const Config> config_;
  ConfigOverrides overrides_;
  bool dry_run_;
  GrpcBridge bridge_;
  asio::signal_set signals_;
  asio::steady_timer watchdog_;
  SyncStats stats_;
  std::unique_ptr<Generation> generation_;
  std::unique_ptr<MetricsServer> metrics_;
  Gate metrics_gate_;
  Wakeup events_;  ///< a stop or a restart was asked for
  bool stop_requested_ = false;
  std::shared_ptr<const Config> restart_with_;  ///< a reload that needs new connections
  int exit_code_ = exit_ok;
  bool started_ = false;  ///< the first generation ran: "etcd-sync stopped" is logged at the end
};

}  // namespace etcd_sync
