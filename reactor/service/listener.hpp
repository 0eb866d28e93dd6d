#pragma once
// The service's own PostgreSQL connection: LISTEN etcd_changes to wake the outbox within
// milliseconds of a commit, and a heartbeat that keeps etcd_sync_service current for `status`.

#include "adapters/pg_connection.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/config/config.hpp"
#include "reactor/service/sync_stats.hpp"
#include "reactor/loop/wakeup.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace etcd_sync {

/// The lowest etcd_wal id named by the notifications' JSON payloads ("id": the first pending row of
/// an INSERT statement, or a requeued row; schema/002 and 004), or nullopt when one of them names
/// none (a NOTIFY etcd_changes sent by hand, say): then any pending row may be new.
std::optional<std::int64_t> lowest_notified_id(const std::vector<PgNotification>& notifications);

class Listener {
 public:
  /// `on_notify` runs on every NOTIFY etcd_changes, with the lowest etcd_wal id the notifications
  /// name (lowest_notified_id), and after every (re)connect with nullopt (when `listen` is true).
  /// `describe` returns the engines' states for the heartbeat.
  /// With `dry_run` the heartbeat is not written.
  Listener(asio::io_context& io, const Config& config, SyncStats& stats, bool listen, bool dry_run,
           std::function<void(std::optional<std::int64_t>)> on_notify,
           std::function<std::pair<std::string, std::string>()> describe);

  /// Runs until stop(), then records state 'stopped'. Never throws.
  asio::awaitable<void> run();
  void stop();
  bool connected() const { return pg_.connected(); }

 private:
  asio::awaitable<void> heartbeat(const char* state);

  asio::io_context& io_;
  const Config& config_;
  SyncStats& stats_;
  bool listen_;
  bool dry_run_;
  std::function<void(std::optional<std::int64_t>)> on_notify_;
  std::function<std::pair<std::string, std::string>()> describe_;
  PgConnection pg_;
  Backoff backoff_;
  Wakeup stop_wakeup_;
  asio::steady_timer tick_;
  bool stopping_ = false;
  bool was_connected_ = false;
  bool waiting_ = false;  // a wait_notifications is pending: the tick may cancel it
};

}  // namespace etcd_sync
