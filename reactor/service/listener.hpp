#pragma once
// The service's own PostgreSQL session: LISTEN etcd_changes to wake the outbox within
// milliseconds of a commit, and the heartbeat (heartbeat.hpp) every second.

#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/service/heartbeat.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace etcd_sync {

/// The lowest etcd_wal id named by the notifications' JSON payloads ("id": the first pending row of
/// an INSERT statement, or a requeued row; schema/002 and 004), or nullopt when one of them names
/// none (a NOTIFY etcd_changes sent by hand, say): then any pending row may be new.
std::optional<std::int64_t> lowest_notified_id(const std::vector<PgNotification>& notifications);

/// Where the listener is; each change is logged once.
enum class ListenerState {
  starting,     ///< not yet connected
  listening,    ///< connected: LISTEN (when the outbox runs) and heartbeats
  backing_off,  ///< PostgreSQL unreachable: waiting before reconnecting
  stopped,      ///< run() has returned
};
const char* to_string(ListenerState state);

class Listener final : public Engine {
 public:
  /// `on_notify` runs on every NOTIFY etcd_changes, with the lowest etcd_wal id the notifications
  /// name (lowest_notified_id), and after every (re)connect with nullopt (when `listen` is true).
  /// `describe` returns what the heartbeat records (and, while leading, its fence); `on_fenced`
  /// hears of a fenced heartbeat. With `dry_run` no heartbeat is written.
  Listener(asio::io_context& io, std::shared_ptr<const Config> config, SyncStats& stats, bool listen, bool dry_run,
           std::function<void(std::optional<std::int64_t>)> on_notify, DescribeInstance describe,
           std::function<void(const SyncError&)> on_fenced);

  const char* name() const override { return "listener"; }
  /// Runs until stop(), then records state 'stopped'.
  asio::awaitable<void> run() override;
  void stop() override;
  void abort() override { pg_.close(); }
  /// Retry settings; taken at the next reconnect or heartbeat.
  void reconfigure(std::shared_ptr<const Config> config) override { config_.offer(std::move(config)); }
  std::string describe() const override { return status_.describe(); }
  bool connected() const { return pg_.connected(); }

 private:
  /// Waits for notifications until `until` (the next heartbeat), passing them to on_notify.
  asio::awaitable<void> listen_until(std::chrono::steady_clock::time_point until);

  asio::io_context& io_;
  ConfigView config_;
  SyncStats& stats_;
  bool listen_;
  bool dry_run_;
  std::function<void(std::optional<std::int64_t>)> on_notify_;
  DescribeInstance describe_;
  std::function<void(const SyncError&)> on_fenced_;
  PgConnection pg_;
  EngineStatus<ListenerState> status_;
  Wakeup stop_wakeup_;
  bool stopping_ = false;
  bool was_connected_ = false;
  int beats_ = 0;
};

}  // namespace etcd_sync
