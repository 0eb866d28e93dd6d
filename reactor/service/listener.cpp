#include "reactor/service/listener.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/loop/deadline.hpp"
#include "reactor/loop/logging.hpp"

#include <nlohmann/json.hpp>

namespace etcd_sync {

namespace {
constexpr std::chrono::milliseconds heartbeat_interval{1000};
/// etcd_wal's pending and failed rows are counted every this many heartbeats (5 s): a count walks
/// the pending index, which a large backlog makes long.
constexpr int kBeatsPerCount = 5;
/// The deadline of each step of the last heartbeat ("stopped"), which must fit the grace period.
constexpr std::chrono::milliseconds kStopRecordTimeout{500};
}  // namespace

const char* to_string(ListenerState state) {
  switch (state) {
    case ListenerState::starting: return "starting";
    case ListenerState::listening: return "listening";
    case ListenerState::backing_off: return "backing_off";
    case ListenerState::stopped: return "stopped";
  }
  return "unknown";
}

std::optional<std::int64_t> lowest_notified_id(const std::vector<PgNotification>& notifications) {
  std::optional<std::int64_t> lowest;
  for (const auto& note : notifications) {
    auto payload = nlohmann::json::parse(note.payload, nullptr, false);
    if (payload.is_discarded() || !payload.is_object() || !payload.contains("id") || !payload["id"].is_number_integer())
      return std::nullopt;
    auto id = payload["id"].get<std::int64_t>();
    if (!lowest || id < *lowest) lowest = id;
  }
  return lowest;
}

Listener::Listener(asio::io_context& io, std::shared_ptr<const Config> config, SyncStats& stats, bool listen,
                   bool dry_run, std::function<void(std::optional<std::int64_t>)> on_notify, DescribeInstance describe,
                   std::function<void(const SyncError&)> on_fenced)
    : io_(io),
      config_(std::move(config)),
      stats_(stats),
      listen_(listen),
      dry_run_(dry_run),
      on_notify_(std::move(on_notify)),
      describe_(std::move(describe)),
      on_fenced_(std::move(on_fenced)),
      pg_(io, config_->postgresql.conninfo, "listener", config_->postgresql.request_timeout),
      status_("listener", ListenerState::starting, ListenerState::backing_off, stats),
      stop_wakeup_(io) {}

void Listener::stop() {
  stopping_ = true;
  stop_wakeup_.notify();
  pg_.cancel_wait();
}

asio::awaitable<void> Listener::listen_until(std::chrono::steady_clock::time_point until) {
  while (!stopping_ && std::chrono::steady_clock::now() < until) {
    // The notification wait races the heartbeat's time.
    Deadline beat(io_, until, [this] { pg_.cancel_wait(); });
    try {
      auto notes = co_await pg_.wait_notifications();
      log_trace("NOTIFY received", {{"component", "listener"}, {"count", static_cast<std::int64_t>(notes.size())}});
      on_notify_(lowest_notified_id(notes));
    } catch (const SyncError& e) {
      if (e.kind() != ErrorKind::cancelled) throw;
    }
  }
}

asio::awaitable<void> Listener::run() {
  bool started = false;
  while (!stopping_) {
    config_.adopt();  // a defined point: between heartbeats
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) {
        co_await open_database(pg_, config_.get());
        if (listen_) co_await pg_.query("LISTEN etcd_changes");
        if (was_connected_) log_info("listener reconnected to PostgreSQL", {{"component", "listener"}});
        was_connected_ = true;
        status_.working(Peer::postgresql);
        status_.set(ListenerState::listening);
        if (listen_) on_notify_(std::nullopt);  // notifications sent while disconnected are lost: sweep now
      }
      if (!dry_run_) co_await write_heartbeat(pg_, started ? "running" : "starting", stats_, describe_);  // coroutine-safe: const char* arms
      status_.working(Peer::postgresql);  // a round trip done: the time the leader's resign rule counts from
      if (beats_++ % kBeatsPerCount == 0) co_await count_wal_rows(pg_, stats_);
      started = true;
      co_await listen_until(std::chrono::steady_clock::now() + heartbeat_interval);
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure) {
      pg_.close();
      if (stopping_) break;
      if (failure->kind() == ErrorKind::fenced && on_fenced_) on_fenced_(*failure);
      SyncError error = *failure;
      if (error.peer() == Peer::unknown) error = SyncError(error.kind(), error.what(), Peer::postgresql);
      co_await stop_wakeup_.wait(status_.failed(error, config_->sync.retry));
    }
  }
  // Record the stop on a fresh connection if the old one is gone.
  if (!dry_run_) {
    try {
      // Within the service's grace period, also when PostgreSQL does not answer.
      pg_.set_request_timeout(kStopRecordTimeout);
      if (!pg_.connected()) {
        co_await pg_.connect(kStopRecordTimeout);
        co_await use_schema(pg_, config_->postgresql.schema, false);
      }
      co_await write_heartbeat(pg_, "stopped", stats_, describe_);
    } catch (const SyncError& e) {
      log_warn("could not record the stop in etcd_sync_service", {{"component", "listener"}, {"error", e.what()}});
    }
  }
  pg_.close();
  status_.clear();
  status_.set(ListenerState::stopped);
}

}  // namespace etcd_sync
