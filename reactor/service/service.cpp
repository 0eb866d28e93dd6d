#include "reactor/service/service.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/engine/host.hpp"
#include "reactor/ha/elector.hpp"
#include "reactor/ha/epoch.hpp"
#include "reactor/history/pruner.hpp"
#include "reactor/loop/deadline.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"
#include "reactor/mirror/mirror.hpp"
#include "reactor/outbox/outbox.hpp"
#include "reactor/service/listener.hpp"
#include "reactor/service/metrics.hpp"
#include "reactor/service/migrations.hpp"

#include <csignal>
#include <cstdlib>

#include <unistd.h>

#ifdef ETCD_SYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace etcd_sync {

namespace {

/// How long calls in flight may finish after a stop before they are cancelled (etcd) or their
/// connections closed (PostgreSQL).
constexpr std::chrono::milliseconds kStopGrace{1500};
/// After a stop was asked for, the process ends within this however the shutdown goes: a step that
/// hangs past the grace period (none should) must not keep a supervisor waiting.
constexpr std::chrono::milliseconds kStopBackstop{2500};

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
  options.on_endpoint_skipped = [](const std::string& skipped, const std::string& chosen) {
    log_warn("etcd endpoint does not answer; using another", {{"endpoint", skipped}, {"using", chosen}});
  };
  return options;
}

bool same_connections(const Config& a, const Config& b) {
  return a.postgresql == b.postgresql && a.etcd == b.etcd && a.sync.direction == b.sync.direction && a.ha == b.ha;
}

namespace {
// A plain function, not coroutine code: g++ 12 mishandles a ?: of class temporaries in a coroutine.
std::string not_taken_reason(const std::optional<SyncError>& failure) {
  return failure ? std::string("could not record the epoch in PostgreSQL: ") + failure->what()
                 : std::string("PostgreSQL records a newer leader epoch for this prefix");
}

/// The configuration as the service runs it: [ha] instance_id resolved to the host name when empty.
std::shared_ptr<const Config> resolved(Config config) {
  if (config.ha.instance_id.empty()) config.ha.instance_id = host_name();
  return std::make_shared<const Config>(std::move(config));
}
}  // namespace

Service::Generation::Generation(asio::io_context& io) : gate(io) {}
Service::Generation::~Generation() = default;
Service::Term::Term(asio::io_context& io) : gate(io) {}
Service::Term::~Term() = default;

Service::Service(Config config, ConfigOverrides overrides, bool dry_run)
    : config_(resolved(std::move(config))),
      overrides_(std::move(overrides)),
      dry_run_(dry_run),
      bridge_(io_),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      watchdog_(io_),
      backstop_(io_),
      metrics_gate_(io_),
      events_(io_) {}

Service::~Service() {
  // Engines and their clients go before the bridge; every call was cancelled by then.
  term_.reset();
  generation_.reset();
  metrics_.reset();
}

// --- the lifecycle ---------------------------------------------------------------------------
//
//   start_up (connect, migrate) -> generation 1 (elector, listener) -> [elected] term 1 (mirror,
//   outbox; epoch taken over in PostgreSQL first) -> [lease lost, key deleted, fenced] term 1 stops,
//   the elector campaigns again -> [elected] term 2 -> ... -> [SIGHUP, new connections] the term and
//   the generation stop, each waiting on its gate -> generation 2 -> ... -> [SIGTERM/SIGINT or an
//   engine's bug] the term drains, the elector revokes its lease (the next instance leads at
//   once), the generation stops -> exit.
//
// SIGHUP with only in-place changes offers the new snapshot to every engine (Engine::reconfigure),
// which each takes at its own defined point. A dry run has no elector: its term starts at once.

asio::awaitable<void> Service::lifecycle() {
  co_await run_generations();
  if (metrics_) co_await retire_metrics(std::move(metrics_));
  co_await metrics_gate_.close();
}

asio::awaitable<void> Service::run_generations() {
  exit_code_ = co_await start_up();
  if (exit_code_ != exit_ok || stop_requested_) co_return;
  generation_ = build_generation(config_);
  start_engines(generation_->engines, generation_->gate);
  if (dry_run_) co_await start_term(std::nullopt);
  started_ = true;
  notify_supervisor("READY=1");
  log_info("etcd-sync started", {{"direction", to_string(config_->sync.direction)},
                                 {"conflict_resolution", to_string(config_->sync.conflict_resolution)},
                                 {"prefix", config_->etcd.prefix}, {"dry_run", dry_run_},
                                 {"instance_id", config_->ha.instance_id}});
  for (;;) {
    co_await events_.wait();
    if (stop_requested_) break;
    if (elected_) {
      auto leader = std::move(elected_);
      elected_.reset();
      co_await start_term(std::move(leader));
    }
    if (lost_) {
      lost_ = false;
      co_await stop_term();
      if (generation_->elector) generation_->elector->demoted();
    }
    if (!restart_with_) continue;
    // A reload changed a connection: the old generation (and its term) ends completely before the
    // new one starts, so no engine ever sees two configurations.
    auto next = std::move(restart_with_);
    restart_with_.reset();
    co_await stop_term();
    if (generation_->elector) generation_->elector->demoted();  // its term is stopped already
    co_await stop_engines(generation_->engines, *generation_->etcd, generation_->gate);
    generation_.reset();
    elected_.reset();
    lost_ = false;
    if (stop_requested_) break;
    config_ = std::move(next);
    generation_ = build_generation(config_);
    start_engines(generation_->engines, generation_->gate);
    if (dry_run_) co_await start_term(std::nullopt);
    notify_supervisor("READY=1");
    log_info("reconnected with the reloaded configuration");
  }
  // Stopping: the term drains first; then the elector, demoted, revokes its lease.
  co_await stop_term();
  if (generation_) {
    if (generation_->elector) generation_->elector->demoted();
    co_await stop_engines(generation_->engines, *generation_->etcd, generation_->gate);
  }
}

asio::awaitable<int> Service::start_up() {
  const Config& config = *config_;
  try {
    if (!config.metrics.listen.empty()) start_metrics(config.metrics.listen);
    PgConnection pg(io_, config.postgresql.conninfo, "startup", config.postgresql.request_timeout);
    EtcdClient etcd(bridge_, etcd_options(config.etcd));
    // A stop asked for meanwhile ends the step in flight at once (request_stop).
    struct Starting {
      Service& service;
      ~Starting() { service.starting_ = {}; }
    } starting{*this};
    starting_ = {&pg, &etcd};
    co_await pg.connect(config.etcd.dial_timeout);
    if (dry_run_) {
      co_await use_schema(pg, config.postgresql.schema, false);
    } else {
      co_await migrate(pg, config.postgresql.schema);  // creates the tables when missing
    }
    log_info("connected to PostgreSQL", {{"endpoint", pg.endpoint()}, {"schema", config.postgresql.schema}});
    co_await etcd.connect();
    auto status = co_await etcd.status();
    stats_.etcd_revision = status.header().revision();
    log_info("connected to etcd", {{"endpoint", etcd.current_endpoint()}, {"version", status.version()},
                                   {"revision", status.header().revision()}});
  } catch (const SyncError& error) {
    if (stop_requested_) co_return exit_ok;  // stopped while starting: not a failure
    log_error("startup failed", {{"error", error.what()}, {"kind", to_string(error.kind())}});
    co_return exit_code_for(error);
  }
  co_return exit_ok;
}

std::unique_ptr<Service::Generation> Service::build_generation(std::shared_ptr<const Config> config) {
  auto g = std::make_unique<Generation>(io_);
  g->config = config;
  g->etcd = std::make_unique<EtcdClient>(bridge_, etcd_options(config->etcd));
  if (!dry_run_) {
    g->elector = std::make_unique<Elector>(
        io_, config, *g->etcd, stats_,
        Elector::Hooks{[this](LeaderTerm leader) {
                         elected_ = std::move(leader);
                         events_.notify();
                       },
                       [this](const std::string& why) {
                         log_info("this instance no longer leads; stopping its engines", {{"why", why}});
                         lost_ = true;
                         events_.notify();
                       }});
  }
  const bool outbox_on = config->sync.direction != Direction::etcd_to_postgres;
  g->listener = std::make_unique<Listener>(
      io_, config, stats_, outbox_on, dry_run_,
      [this](std::optional<std::int64_t> lowest_id) {
        if (term_ && term_->outbox) term_->outbox->wake(lowest_id);
      },
      [this] { return describe_instance(); }, [this](const SyncError& error) { on_fenced(error); });
  if (g->elector) g->engines.push_back(g->elector.get());
  g->engines.push_back(g->listener.get());
  return g;
}

void Service::start_engines(const std::vector<Engine*>& engines, Gate& gate) {
  for (Engine* engine : engines) {
    spawn(io_, gate, engine->run(), engine->name(), [this, &gate, engine] {
      // run() returns only once stop() was called; anything else is a bug worth stopping for
      // (an exception has stopped the service already).
      if (!gate.closed() && !stop_requested_) {
        log_error("engine ended without being stopped", {{"component", engine->name()}});
        request_stop(exit_runtime);
      }
    });
  }
}

asio::awaitable<void> Service::stop_engines(const std::vector<Engine*>& engines, EtcdClient& etcd, Gate& gate) {
  for (Engine* engine : engines) engine->stop();
  // In-flight work gets a moment to finish; then calls still waiting on etcd are cancelled and
  // PostgreSQL calls still waiting are ended.
  EtcdClient* client = &etcd;
  Deadline grace(io_, kStopGrace, [client, engines] {
    log_warn("calls still in flight after the grace period; ending them", {{"grace_ms", kStopGrace.count()}});
    client->cancel_all();
    for (Engine* engine : engines) engine->abort();
  });
  co_await gate.close();
  client->cancel_all();  // calls of no engine's (none expected): complete them before the client goes
}

asio::awaitable<void> Service::start_term(std::optional<LeaderTerm> leader) {
  if (term_ || stop_requested_) co_return;
  if (leader) {
    bool taken = false;
    std::optional<SyncError> failure;
    try {
      taken = co_await take_over_epoch(io_, *config_, *leader);
    } catch (const SyncError& error) {
      failure = error;
    }
    if (!taken) {
      const std::string why = not_taken_reason(failure);
      log_warn("elected, but not leading", {{"epoch", leader->epoch}, {"why", why}});
      if (generation_->elector) generation_->elector->step_down(why);
      co_return;
    }
    log_info("leading", {{"epoch", leader->epoch}, {"instance_id", config_->ha.instance_id}});
  }
  auto t = std::make_unique<Term>(io_);
  t->leader = leader;
  t->etcd = std::make_unique<EtcdClient>(bridge_, etcd_options(config_->etcd));
  Fencing fencing{leader, [this](const SyncError& error) { on_fenced(error); }};
  if (config_->sync.direction != Direction::postgres_to_etcd)
    t->mirror = std::make_unique<Mirror>(io_, config_, *t->etcd, stats_, dry_run_, fencing);
  if (config_->sync.direction != Direction::etcd_to_postgres)
    t->outbox = std::make_unique<Outbox>(io_, config_, *t->etcd, stats_, dry_run_, fencing);
  if (t->mirror && !dry_run_) t->pruner = std::make_unique<Pruner>(io_, config_, stats_, fencing);
  if (t->mirror) t->engines.push_back(t->mirror.get());
  if (t->outbox) t->engines.push_back(t->outbox.get());
  if (t->pruner) t->engines.push_back(t->pruner.get());
  term_ = std::move(t);
  start_engines(term_->engines, term_->gate);
  if (term_->outbox) term_->outbox->wake();
}

asio::awaitable<void> Service::stop_term() {
  if (!term_) co_return;
  co_await stop_engines(term_->engines, *term_->etcd, term_->gate);
  term_.reset();
  stats_.snapshot_done = false;
}

void Service::on_fenced(const SyncError& error) {
  ++stats_.fenced;
  log_warn("fenced: another instance leads; this one writes nothing more and stands by",
           {{"error", error.what()}});
  if (generation_ && generation_->elector) generation_->elector->step_down(error.what());
}

InstanceFacts Service::describe_instance() const {
  InstanceFacts facts;
  facts.instance_id = config_->ha.instance_id;
  const bool leads = leads_now();
  facts.role = leads ? "leader" : "standby";
  facts.ha_state = generation_ && generation_->elector ? generation_->elector->describe() : std::string("off");
  if (stop_requested_ && !leads) facts.ha_state = "stopped";
  if (term_) {
    facts.term = term_->leader;
    facts.mirror_state = term_->mirror ? term_->mirror->describe() : "off";
    facts.outbox_state = term_->outbox ? term_->outbox->describe() : "off";
  }
  return facts;
}

void Service::start_metrics(const std::string& listen) {
  auto endpoint = parse_listen_address(listen);
  if (!endpoint) throw SyncError(ErrorKind::permanent, "[metrics] listen: not host:port: " + listen);
  metrics_ = std::make_unique<MetricsServer>(
      io_, *endpoint, [this] { return render_metrics(stats_, ETCD_SYNC_VERSION); }, [this] { return ready(); },
      [this] { return leads_now() && term_->leader.has_value(); });
  spawn(io_, metrics_gate_, metrics_->run(), "metrics server");
  log_info("serving /metrics, /healthz and /readyz", {{"listen", listen}});
}

asio::awaitable<void> Service::retire_metrics(std::unique_ptr<MetricsServer> server) {
  server->stop();
  co_await server->stopped();
}

bool Service::leads_now() const {
  // A term being stopped (its lease lost, resigned, fenced) leads no more, though its engines
  // may still be finishing within the grace period.
  if (!term_) return false;
  return !generation_ || !generation_->elector || generation_->elector->leads();
}

bool Service::ready() const {
  if (!generation_ || !stats_.etcd.up() || !stats_.postgresql.up()) return false;
  if (!term_) return true;  // a standby connected to both sides is ready to lead
  return !term_->mirror || (stats_.snapshot_done && term_->mirror->watching());
}

void Service::request_stop(int exit_code) {
  if (exit_code != exit_ok && exit_code_ == exit_ok) exit_code_ = exit_code;
  if (stop_requested_) return;
  stop_requested_ = true;
  notify_supervisor("STOPPING=1");
  events_.notify();
  if (starting_.pg) starting_.pg->close();
  if (starting_.etcd) starting_.etcd->cancel_all();
  backstop_.expires_after(kStopBackstop);
  backstop_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    log_error("the shutdown did not end within its time; exiting now (work in flight stays pending)",
              {{"after_ms", kStopBackstop.count()}});
    std::_Exit(exit_code_);
  });
}

void Service::on_signal(int signal_number) {
  if (signal_number == SIGHUP) {
    reload();
  } else {
    log_info("stopping", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
    request_stop(exit_ok);
  }
  // Keep listening: a second SIGTERM is harmless, and SIGHUP may come again.
  signals_.async_wait([this](boost::system::error_code ec, int n) {
    if (!ec) on_signal(n);
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
  auto next = resolved(std::move(loaded.config));
  const Config& running = restart_with_ ? *restart_with_ : *config_;
  const bool reconnect = !same_connections(running, *next);
  configure_logging(next->logging.level, next->logging.format);
  log_info("configuration reloaded", {{"file", next->source_file}, {"reconnect", reconnect},
                                      {"log_level", to_string(next->logging.level)},
                                      {"batch_size", next->sync.batch_size}});
  if (next->metrics.listen != running.metrics.listen) {
    if (metrics_) spawn(io_, metrics_gate_, retire_metrics(std::move(metrics_)), "metrics server shutdown");
    try {
      if (!next->metrics.listen.empty()) start_metrics(next->metrics.listen);
    } catch (const SyncError& error) {
      log_error("cannot serve metrics at the reloaded address", {{"error", error.what()}});
    }
  }
  if (reconnect) {
    restart_with_ = std::move(next);
    events_.notify();
    return;  // READY=1 once the new generation runs
  }
  config_ = next;
  if (generation_)
    for (Engine* engine : generation_->engines) engine->reconfigure(next);
  if (term_)
    for (Engine* engine : term_->engines) engine->reconfigure(next);
  notify_supervisor("READY=1");
}

void Service::pet_watchdog() {
  // Sent from the reactor, so a stalled loop stops the pings and systemd restarts the service.
  notify_supervisor("WATCHDOG=1");
  watchdog_.expires_after(watchdog_interval());
  watchdog_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !stop_requested_) pet_watchdog();
  });
}

int Service::run() {
  set_spawn_failure_handler([this](const std::string&, std::exception_ptr failure) {
    // A permission an engine cannot work without stops the service like a missing one at startup;
    // a configuration found unusable at runtime (an instance_id clash) like a bad file.
    int code = exit_runtime;
    try {
      std::rethrow_exception(failure);
    } catch (const SyncError& error) {
      if (error.kind() == ErrorKind::permission_denied) code = exit_permission;
    } catch (const FatalError& error) {
      code = error.exit_code();
    } catch (...) {
    }
    request_stop(code);
  });
  signals_.async_wait([this](boost::system::error_code ec, int n) {
    if (!ec) on_signal(n);
  });
  if (watchdog_interval().count() > 0) pet_watchdog();
  spawn(io_, lifecycle(), "service lifecycle", [this] {
    signals_.cancel();
    watchdog_.cancel();
    backstop_.cancel();
  });
  io_.run();
  set_spawn_failure_handler({});
  if (started_) log_info("etcd-sync stopped", {{"exit_code", exit_code_}});
  return exit_code_;
}

}  // namespace etcd_sync
