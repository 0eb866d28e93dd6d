#pragma once
// `etcd-sync start`: one io_context on the main thread runs everything. A configuration
// generation (one etcd client, the elector, the listener) runs inside a Gate; while the elector
// says this instance leads, a term (the mirror and the outbox, fenced with the term's epoch) runs
// inside another. SIGHUP either hands in-place settings to them or replaces the whole generation;
// SIGINT/SIGTERM stop it. The lifecycle is Service::lifecycle() in service.cpp.

#include "adapters/etcd_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/service/heartbeat.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/wakeup.hpp"

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <vector>

namespace etcd_sync {

class Elector;
class Mirror;
class Outbox;
class Pruner;
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
  /// One configuration generation: what every instance runs, leader or standby. The snapshot it
  /// runs on, its etcd client, the elector and the listener, and the gate their coroutines run in.
  struct Generation {
    explicit Generation(asio::io_context& io);
    ~Generation();
    std::shared_ptr<const Config> config;
    std::unique_ptr<EtcdClient> etcd;
    std::unique_ptr<Elector> elector;  ///< none in a dry run (which writes nothing, not even a campaign key)
    std::unique_ptr<Listener> listener;
    std::vector<Engine*> engines;  ///< the two above that exist, in start order
    Gate gate;
  };
  /// A term: the engines that write (mirror, outbox), run while this instance leads, on an etcd
  /// client of their own (so stopping them cancels none of the elector's calls), fenced with the
  /// term's epoch.
  struct Term {
    explicit Term(asio::io_context& io);
    ~Term();
    std::optional<LeaderTerm> leader;  ///< none in a dry run
    std::unique_ptr<EtcdClient> etcd;
    std::unique_ptr<Mirror> mirror;
    std::unique_ptr<Outbox> outbox;
    std::unique_ptr<Pruner> pruner;  ///< with the mirror, not in a dry run
    std::vector<Engine*> engines;
    Gate gate;
  };

  /// run_generations(), then the metrics server stops (also after a failed start).
  asio::awaitable<void> lifecycle();
  asio::awaitable<void> run_generations();
  asio::awaitable<int> start_up();
  std::unique_ptr<Generation> build_generation(std::shared_ptr<const Config> config);
  /// Spawns every engine's run() in `gate`; an engine that ends while the gate is open stops the
  /// service (a bug).
  void start_engines(const std::vector<Engine*>& engines, Gate& gate);
  /// Asks every engine to stop, cancels `etcd`'s calls still running after 1.5 s, and waits on `gate`.
  asio::awaitable<void> stop_engines(const std::vector<Engine*>& engines, EtcdClient& etcd, Gate& gate);
  /// Takes the epoch over in PostgreSQL ("only if greater") and starts the leader's engines; a
  /// stale epoch steps down instead.
  asio::awaitable<void> start_term(std::optional<LeaderTerm> leader);
  asio::awaitable<void> stop_term();
  void on_fenced(const SyncError& error);
  InstanceFacts describe_instance() const;
  void start_metrics(const std::string& listen);
  /// Stops `server` and waits until its connections have ended; it is destroyed after.
  asio::awaitable<void> retire_metrics(std::unique_ptr<MetricsServer> server);
  void on_signal(int signal_number);
  void reload();
  void request_stop(int exit_code);
  bool ready() const;
  /// Whether this instance leads now: a term runs and the elector still says it leads (false
  /// while a term that lost the lead is being stopped).
  bool leads_now() const;
  void pet_watchdog();

  asio::io_context io_;
  std::shared_ptr<const Config> config_;
  ConfigOverrides overrides_;
  bool dry_run_;
  GrpcBridge bridge_;
  asio::signal_set signals_;
  asio::steady_timer watchdog_;
  asio::steady_timer backstop_;  ///< armed by request_stop(): kStopBackstop
  /// start_up()'s connections while it runs, so that a stop ends its step at once.
  struct Starting {
    PgConnection* pg = nullptr;
    EtcdClient* etcd = nullptr;
  } starting_;
  SyncStats stats_;
  std::unique_ptr<Generation> generation_;
  std::unique_ptr<Term> term_;
  std::unique_ptr<MetricsServer> metrics_;
  Gate metrics_gate_;
  Wakeup events_;  ///< a stop, a restart, an election won or lost was asked for
  bool stop_requested_ = false;
  std::shared_ptr<const Config> restart_with_;  ///< a reload that needs new connections
  std::optional<LeaderTerm> elected_;           ///< the elector won: start this term
  bool lost_ = false;                           ///< the elector lost: stop the term
  int exit_code_ = exit_ok;
  bool started_ = false;  ///< the first generation ran: "etcd-sync stopped" is logged at the end
};

}  // namespace etcd_sync
