#include "reactor/service/service.hpp"

#include "reactor/loop/logging.hpp"
#include "reactor/service/database.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <csignal>

#ifdef ETCD_SYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace etcd_sync {

namespace {

void notify_supervisor(const char* state) {
#ifdef ETCD_SYNC_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

/// Half of systemd's WatchdogSec (sd_watchdog_enabled), or zero when no watchdog is asked for.
std::chrono::milliseconds watchdog_interval() {
#ifdef ETCD_SYNC_HAVE_SYSTEMD
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return std::chrono::milliseconds(usec / 2000);
#endif
  return std::chrono::milliseconds(0);
}

bool same_connections(const Config& a, const Config& b) {
  const auto &e1 = a.etcd, &e2 = b.etcd;
  return a.postgresql.conninfo == b.postgresql.conninfo && a.postgresql.schema == b.postgresql.schema &&
         e1.endpoints == e2.endpoints && e1.prefix == e2.prefix && e1.username == e2.username &&
         e1.password == e2.password && e1.tls == e2.tls && e1.tls_files.ca_file == e2.tls_files.ca_file &&
         e1.tls_files.cert_file == e2.tls_files.cert_file && e1.tls_files.key_file == e2.tls_files.key_file &&
         e1.tls_files.server_name == e2.tls_files.server_name && e1.dial_timeout == e2.dial_timeout &&
         e1.request_timeout == e2.request_timeout && a.sync.direction == b.sync.direction;
}

}  // namespace

int exit_code_for(const SyncError& error) {
  switch (error.kind()) {
    case ErrorKind::permission_denied: return exit_permission;
    case ErrorKind::transient: return exit_connect;
    default: return exit_runtime;
  }
}

EtcdClientOptions etcd_options(const EtcdConfig& config) {
  EtcdClientOptions options;
  options.endpoints = config.endpoints;
  options.dial_timeout = config.dial_timeout;
  options.request_timeout = config.request_timeout;
  options.username = config.username;
  options.password = config.password;
  options.tls = config.tls;
  options.ca_file = config.tls_files.ca_file;
  options.cert_file = config.tls_files.cert_file;
  options.key_file = config.tls_files.key_file;
  options.server_name = config.tls_files.server_name;
  return options;
}

Service::Service(Config config, ConfigOverrides overrides, bool dry_run)
    : config_(std::move(config)),
      overrides_(std::move(overrides)),
      dry_run_(dry_run),
      bridge_(io_),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      force_stop_(io_),
      watchdog_(io_),
      engines_done_(io_) {}

Service::~Service() {
  // Engines and the client go before the bridge; every call was cancelled by then.
  listener_.reset();
  outbox_.reset();
  mirror_.reset();
  if (etcd_) etcd_->cancel_all();
  etcd_.reset();
}

void Service::build_engines() {
  etcd_ = std::make_unique<EtcdClient>(bridge_, etcd_options(config_.etcd));
  bool mirror_on = config_.sync.direction != Direction::postgres_to_etcd;
  bool outbox_on = config_.sync.direction != Direction::etcd_to_postgres;
  mirror_ = mirror_on ? std::make_unique<Mirror>(io_, config_, *etcd_, stats_, dry_run_) : nullptr;
  outbox_ = outbox_on ? std::make_unique<Outbox>(io_, config_, *etcd_, stats_, dry_run_) : nullptr;
  listener_ = std::make_unique<Listener>(
      io_, config_, stats_, outbox_on, dry_run_,
      [this](std::optional<std::int64_t> lowest_id) {
        if (outbox_) outbox_->wake(lowest_id);
      },
      [this] {
        return std::pair<std::string, std::string>(mirror_ ? to_string(mirror_->state()) : "off",
                                                   outbox_ ? to_string(outbox_->state()) : "off");
      });
}

void Service::stop_engines() {
  if (mirror_) mirror_->stop();
  if (outbox_) outbox_->stop();
  if (listener_) listener_->stop();
  if (metrics_ && stopping_) metrics_->stop();
}

bool Service::ready() const {
  bool mirror_ready = !mirror_ || (stats_.snapshot_done && mirror_->state() == MirrorState::watching);
  return stats_.etcd_up && stats_.postgres_up && mirror_ready;
}

asio::awaitable<int> Service::start_up() {
  try {
    if (!config_.metrics.listen.empty()) {
      auto endpoint = parse_listen_address(config_.metrics.listen);
      if (!endpoint) throw SyncError(ErrorKind::permanent, "[metrics] listen: not host:port: " + config_.metrics.listen);
      metrics_ = std::make_unique<MetricsServer>(
          io_, *endpoint, [this] { return render_metrics(stats_, ETCD_SYNC_VERSION); }, [this] { return ready(); });
      asio::co_spawn(io_, metrics_->run(), asio::detached);
      log_info("serving /metrics, /healthz and /readyz", {{"listen", config_.metrics.listen}});
    }
    PgConnection pg(io_, config_.postgresql.conninfo, "startup");
    co_await pg.connect(config_.etcd.dial_timeout);
    if (dry_run_) {
      co_await use_schema(pg, config_.postgresql.schema, false);
    } else {
      co_await migrate(pg, config_.postgresql.schema);  // creates the tables when missing
    }
    log_info("connected to PostgreSQL", {{"endpoint", pg.endpoint()}, {"schema", config_.postgresql.schema}});
    build_engines();
    co_await etcd_->connect();
    auto status = co_await etcd_->status();
    stats_.etcd_revision = status.header().revision();
    log_info("connected to etcd", {{"endpoint", etcd_->current_endpoint()}, {"version", status.version()},
                                   {"revision", status.header().revision()}});
  } catch (const SyncError& error) {
    log_error("startup failed", {{"error", error.what()}, {"kind", to_string(error.kind())}});
    co_return exit_code_for(error);
  }
  co_return exit_ok;
}

asio::awaitable<void> Service::run_engines() {
  for (;;) {
    auto spawn = [this](asio::awaitable<void> engine, const char* name) {
      ++engines_running_;
      asio::co_spawn(io_, std::move(engine), [this, name](std::exception_ptr failure) {
        if (failure) {
          try {
            std::rethrow_exception(failure);
          } catch (const std::exception& e) {
            log_error("engine failed", {{"component", name}, {"error", e.what()}});
          }
          exit_code_ = exit_runtime;
          begin_stop();
        }
        --engines_running_;
        engines_done_.notify();
      });
    };
    if (mirror_) spawn(mirror_->run(), "mirror");
    if (outbox_) spawn(outbox_->run(), "outbox");
    spawn(listener_->run(), "listener");
    while (engines_running_ > 0) co_await engines_done_.wait(std::chrono::seconds(1));
    if (!restart_pending_ || stopping_) break;
    // A reload changed a connection: rebuild with the new settings and go on.
    restart_pending_ = false;
    listener_.reset();
    outbox_.reset();
    mirror_.reset();
    etcd_->cancel_all();
    etcd_.reset();
    build_engines();
    notify_supervisor("READY=1");
    log_info("reconnected with the reloaded configuration");
  }
}

void Service::on_signal(int signal_number) {
  if (signal_number == SIGHUP) {
    reload();
  } else {
    log_info("stopping", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
    begin_stop();
  }
  // Keep listening: a second SIGTERM is harmless, and SIGHUP may come again.
    signals_.async_wait([this](boost::system::error_code ec, int n) {
      if (!ec) on_signal(n);
    });
}

void Service::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  notify_supervisor("STOPPING=1");
  stop_engines();
  // In-flight work gets a moment to finish; then calls still waiting on etcd are cancelled.
  force_stop_.expires_after(std::chrono::milliseconds(1500));
  force_stop_.async_wait([this](boost::system::error_code ec) {
    if (!ec && etcd_) etcd_->cancel_all();
  });
}

void Service::reload() {
  notify_supervisor("RELOADING=1");
  auto loaded = load_config(overrides_, process_environment());
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) log_error("reload rejected: configuration error", {{"error", e.to_string()}});
    log_warn("reload rejected; the running configuration stays", {{"file", overrides_.config_file.value_or("")}});
    notify_supervisor("READY=1");
    return;
  }
  bool reconnect = !same_connections(config_, loaded.config);
  config_ = std::move(loaded.config);
  configure_logging(config_.logging.level, config_.logging.format);
  log_info("configuration reloaded", {{"file", config_.source_file}, {"reconnect", reconnect},
                                      {"log_level", to_string(config_.logging.level)},
                                      {"batch_size", config_.sync.batch_size}});
  if (reconnect) {
    restart_pending_ = true;
    stop_engines();
  } else {
    if (outbox_) outbox_->wake();
    notify_supervisor("READY=1");
  }
}

void Service::pet_watchdog() {
  // Sent from the reactor, so a stalled loop stops the pings and systemd restarts the service.
  notify_supervisor("WATCHDOG=1");
  watchdog_.expires_after(watchdog_interval());
  watchdog_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !stopping_) pet_watchdog();
  });
}

int Service::run() {
  signals_.async_wait([this](boost::system::error_code ec, int n) {
    if (!ec) on_signal(n);
  });
  if (watchdog_interval().count() > 0) pet_watchdog();
  int startup = exit_ok;
  asio::co_spawn(io_, start_up(), [&](std::exception_ptr failure, int code) {
    startup = failure ? exit_runtime : code;
    if (startup != exit_ok || stopping_) {
      signals_.cancel();
      watchdog_.cancel();
      io_.stop();
      return;
    }
    notify_supervisor("READY=1");
    log_info("etcd-sync started", {{"direction", to_string(config_.sync.direction)},
                                   {"conflict_resolution", to_string(config_.sync.conflict_resolution)},
                                   {"prefix", config_.etcd.prefix}, {"dry_run", dry_run_}});
    asio::co_spawn(io_, run_engines(), [this](std::exception_ptr) {
      signals_.cancel();
      force_stop_.cancel();
      watchdog_.cancel();
      io_.stop();
    });
  });
  io_.run();
  if (startup != exit_ok) return startup;
  log_info("etcd-sync stopped", {{"exit_code", exit_code_}});
  return exit_code_;
}

}  // namespace etcd_sync
