#include "reactor/service/listener.hpp"

#include "reactor/loop/logging.hpp"
#include "reactor/service/database.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

namespace etcd_sync {

namespace {
constexpr std::chrono::milliseconds heartbeat_interval{1000};

std::string host_name() {
  char buffer[256] = {};
  gethostname(buffer, sizeof buffer - 1);
  return buffer;
}
}  // namespace

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

Listener::Listener(asio::io_context& io, const Config& config, SyncStats& stats, bool listen, bool dry_run,
                   std::function<void(std::optional<std::int64_t>)> on_notify,
                   std::function<std::pair<std::string, std::string>()> describe)
    : io_(io),
      config_(config),
      stats_(stats),
      listen_(listen),
      dry_run_(dry_run),
      on_notify_(std::move(on_notify)),
      describe_(std::move(describe)),
      pg_(io, config.postgresql.conninfo, "listener"),
      backoff_(config.sync.retry.initial_backoff, config.sync.retry.max_backoff),
      stop_wakeup_(io),
      tick_(io) {}

void Listener::stop() {
  stopping_ = true;
  stop_wakeup_.notify();
  if (waiting_) pg_.cancel_wait();
}

asio::awaitable<void> Listener::heartbeat(const char* state) {
  if (dry_run_) co_return;
  auto [mirror_state, outbox_state] = describe_();
  co_await pg_.query(
      "INSERT INTO etcd_sync_service AS s (id, state, host, pid, version, started_at, heartbeat_at, etcd_revision, "
      "  mirror_state, outbox_state, events_applied, resyncs, last_error, last_error_at, stopped_at) "
      "VALUES (1, $1, $2, $3::int, $4, CASE WHEN $1 = 'starting' THEN now() END, now(), nullif($5::bigint, 0), "
      "  $6, $7, $8::bigint, $9::bigint, nullif($10, ''), CASE WHEN $10 <> '' THEN now() END, "
      "  CASE WHEN $1 = 'stopped' THEN now() END) "
      "ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, host = EXCLUDED.host, pid = EXCLUDED.pid, "
      "  version = EXCLUDED.version, heartbeat_at = now(), "
      "  started_at = coalesce(EXCLUDED.started_at, s.started_at), "
      "  stopped_at = EXCLUDED.stopped_at, "
      "  etcd_revision = coalesce(EXCLUDED.etcd_revision, s.etcd_revision), "
      "  mirror_state = EXCLUDED.mirror_state, outbox_state = EXCLUDED.outbox_state, "
      "  events_applied = s.events_applied + EXCLUDED.events_applied, resyncs = s.resyncs + EXCLUDED.resyncs, "
      "  last_error = coalesce(EXCLUDED.last_error, s.last_error), "
      "  last_error_at = CASE WHEN EXCLUDED.last_error IS NOT NULL AND EXCLUDED.last_error IS DISTINCT FROM s.last_error "
      "                  THEN now() ELSE s.last_error_at END",
      pg_params(PgParam::text(state), PgParam::text(host_name()), PgParam::int64(getpid()), PgParam::text(ETCD_SYNC_VERSION),
       PgParam::int64(stats_.etcd_revision), PgParam::text(mirror_state), PgParam::text(outbox_state),
       PgParam::int64(stats_.pending_events), PgParam::int64(stats_.pending_resyncs),
       PgParam::text(stats_.last_error)));
  stats_.pending_events = 0;
  stats_.pending_resyncs = 0;
}

asio::awaitable<void> Listener::run() {
  bool started = false;
  while (!stopping_) {
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) {
        co_await open_database(pg_, config_);
        if (listen_) co_await pg_.query("LISTEN etcd_changes");
        if (was_connected_) log_info("listener reconnected to PostgreSQL", {{"component", "listener"}});
        was_connected_ = true;
        stats_.postgres_up = true;
        backoff_.reset();
        if (listen_) on_notify_(std::nullopt);  // notifications sent while disconnected are lost: sweep now
      }
      co_await heartbeat(started ? "running" : "starting");
      started = true;
      auto next_beat = std::chrono::steady_clock::now() + heartbeat_interval;
      while (!stopping_ && std::chrono::steady_clock::now() < next_beat) {
        // Race the notification wait against the heartbeat tick.
        tick_.expires_at(next_beat);
        tick_.async_wait([this](boost::system::error_code ec) {
          if (!ec && waiting_) pg_.cancel_wait();
        });
        std::optional<SyncError> wait_error;
        try {
          waiting_ = true;
          auto notes = co_await pg_.wait_notifications();
          log_trace("NOTIFY received", {{"component", "listener"}, {"count", static_cast<std::int64_t>(notes.size())}});
          on_notify_(lowest_notified_id(notes));
        } catch (const SyncError& e) {
          wait_error = e;
        }
        waiting_ = false;
        tick_.cancel();
        if (wait_error && wait_error->kind() != ErrorKind::cancelled) throw *wait_error;
      }
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure) {
      tick_.cancel();
      pg_.close();
      stats_.postgres_up = false;
      if (stopping_) break;
      stats_.last_error = failure->what();
      // Once per outage: the first failure after a working connection is news, retries are not.
      bool first = backoff_.attempts() == 0;
      log(first ? LogLevel::warn : LogLevel::debug, "listener lost PostgreSQL; reconnecting",
          {{"component", "listener"}, {"error", failure->what()}, {"attempt", backoff_.attempts() + 1}});
      co_await stop_wakeup_.wait(backoff_.next());
    }
  }
  // Record the stop on a fresh connection if the old one is gone.
  try {
    if (!pg_.connected()) {
      co_await pg_.connect(std::chrono::milliseconds(1000));
      co_await use_schema(pg_, config_.postgresql.schema, false);
    }
    co_await heartbeat("stopped");
  } catch (const std::exception& e) {
    log_warn("could not record the stop in etcd_sync_service", {{"component", "listener"}, {"error", e.what()}});
  }
  pg_.close();
}

}  // namespace etcd_sync
