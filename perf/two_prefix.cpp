// (k) two-prefix: what one instance carries, and how a user outgrows it. Two etcd-sync instances
// on the same etcd and the same PostgreSQL database, each owning one prefix (/bench/a/, /bench/b/)
// with its own HA group ([ha] election_prefix and instance_id) and its own [postgresql] schema: the
// outbox claims every pending etcd_wal row of its schema whatever its key (a row outside the
// instance's prefix would become `failed`), and etcd_sync_service, the heartbeat's counts and
// `status` are per schema, so two groups cannot share one. (The NOTIFY channel etcd_changes is the
// database's: each instance is also woken by the other schema's inserts.) Each prefix takes (b)'s mirror load
// (open-loop puts at --rate on 1,000 keys) and an outbox load (etcd_wal rows at 500 rows/s, each its
// own INSERT transaction, fresh keys) at once, for --latency-seconds. Then the same two loads on
// one instance with prefix /bench/ (its own schema), in the same run: the comparison.
//
// Per prefix: the mirror's latency as (b) measures it (put answered -> row visible, from the
// deferred trigger in the instance's schema), the outbox's as (c) does (COMMIT returned -> event on
// a Watch of the rows' keys), what was applied, and the CPU of each process over the load.

#include "perf/bench_env.hpp"
#include "perf/mirror_latency.hpp"
#include "adapters/etcd_watch.hpp"
#include "reactor/loop/wakeup.hpp"

#include <unistd.h>

#include <fstream>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

constexpr double wal_rate = 500;        ///< etcd_wal rows/s per prefix
constexpr int inserters_per_prefix = 4;  ///< connections inserting them

/// One etcd_wal row of the outbox load, with wall-clock micros.
struct WalRow {
  std::int64_t committed_us = 0;  ///< the INSERT's autocommit returned
  std::int64_t seen_us = 0;       ///< its key's event arrived on the Watch
  double late_ms = 0;
};

/// The outbox load of one prefix: rows `<key_prefix><i>` inserted open-loop into
/// `<schema>.etcd_wal`, and a Watch on key_prefix that records when each key's event arrives.
struct WalStream {
  std::string schema;
  std::string key_prefix;
  std::string value;
  std::vector<WalRow> rows;
  std::size_t seen = 0;
  std::vector<std::unique_ptr<PgConnection>> pool;
  std::unique_ptr<WatchStream> watch;
  bool reader_done = false;
};

/// What one prefix takes at once: paced puts for the mirror, rows for the outbox.
struct PrefixLoad {
  std::string prefix;  ///< "/bench/a/"
  std::string schema;  ///< the schema of the instance that carries it
  PacedPuts puts;
  WalStream wal;
};

/// Counts the coroutines of a load that still run, and keeps the first failure.
struct Tasks {
  explicit Tasks(asio::io_context& io) : done(io) {}
  int running = 0;
  std::exception_ptr failure;
  Wakeup done;
  auto completion() {
    ++running;
    return [this](std::exception_ptr e) {
      if (e && !failure) failure = e;
      --running;
      done.notify();
    };
  }
};

asio::awaitable<void> read_wal_events(WalStream& stream) {
  while (auto response = co_await stream.watch->read()) {
    const auto now = wall_micros();
    for (const auto& event : response->events()) {
      const auto& key = event.kv().key();
      if (!key.starts_with(stream.key_prefix)) continue;
      const auto index = std::stoul(key.substr(stream.key_prefix.size()));
      if (index < stream.rows.size() && stream.rows[index].seen_us == 0) {
        stream.rows[index].seen_us = now;
        ++stream.seen;
      }
    }
  }
}

asio::awaitable<void> open_wal_watch(Loop& loop, WalStream& stream) {
  for (auto& pg : stream.pool) co_await pg->connect(5s);
  const auto from = co_await etcd_revision(loop.etcd()) + 1;
  stream.watch = loop.etcd().open_watch();
  const auto create = prefix_watch(stream.key_prefix, from);
  co_await stream.watch->start(create);
  auto created = co_await stream.watch->read();
  if (!created || !created->created()) throw std::runtime_error("the watch of " + stream.key_prefix + " was not created");
}

/// Inserts rows first, first + step, ... of `stream` at their scheduled times on `pg`.
asio::awaitable<void> insert_wal_rows(PgConnection& pg, WalStream& stream, std::size_t first, std::size_t step,
                                      Clock::time_point start, std::chrono::nanoseconds period) {
  const std::string sql = "INSERT INTO \"" + stream.schema + "\".etcd_wal (key, value) VALUES ($1, $2)";
  for (std::size_t i = first; i < stream.rows.size(); i += step) {
    const auto due = start + period * static_cast<std::int64_t>(i);
    co_await sleep_until(due);
    stream.rows[i].late_ms = std::chrono::duration<double, std::milli>(Clock::now() - due).count();
    const std::string key = stream.key_prefix + std::to_string(i);
    co_await pg.query(sql, pg_params(PgParam::text(key), PgParam::text(stream.value)));
    stream.rows[i].committed_us = wall_micros();
  }
}

std::size_t seen_total(const std::vector<PrefixLoad*>& loads) {
  std::size_t n = 0;
  for (const auto* load : loads) n += load->wal.seen;
  return n;
}

/// Runs every load at once: each prefix's puts and rows, until all are sent; then waits up to 30 s
/// for every row's event. The pools stay open (their backends' CPU is in the caller's window).
asio::awaitable<void> run_loads(Loop& loop, std::vector<PrefixLoad*> loads, double rate) {
  for (auto* load : loads) co_await open_wal_watch(loop, load->wal);
  Tasks readers(loop.io());
  for (auto* load : loads) asio::co_spawn(loop.io(), read_wal_events(load->wal), readers.completion());
  Tasks senders(loop.io());
  const auto period = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / wal_rate));
  const auto start = Clock::now() + 20ms;
  for (auto* load : loads) {
    asio::co_spawn(loop.io(), pace_puts(loop, load->puts, rate), senders.completion());
    for (std::size_t j = 0; j < load->wal.pool.size(); ++j)
      asio::co_spawn(loop.io(), insert_wal_rows(*load->wal.pool[j], load->wal, j, load->wal.pool.size(), start, period),
                     senders.completion());
  }
  while (senders.running > 0) co_await senders.done.wait(1s);
  std::size_t expected = 0;
  for (const auto* load : loads) expected += load->wal.rows.size();
  const auto deadline = Clock::now() + 30s;
  while (seen_total(loads) < expected && readers.running == static_cast<int>(loads.size()) && Clock::now() < deadline)
    co_await sleep_for(20ms);
  for (auto* load : loads) load->wal.watch->cancel();
  while (readers.running > 0) co_await readers.done.wait(1s);
  for (auto* load : loads) co_await load->wal.watch->finish();
  if (senders.failure) std::rethrow_exception(senders.failure);
}

/// One etcd-sync instance of the scenario, with its own schema, prefix and HA group.
struct Instance {
  std::string name;
  std::string schema;
  std::string prefix;
  fs::path config;
  std::unique_ptr<ServiceUnderTest> service;
};

Instance make_instance(BenchEnv& env, const BenchOptions& options, const std::string& name, const std::string& prefix) {
  Instance instance{name, "bench_" + name, prefix, {}, nullptr};
  auto settings = BenchEnv::default_settings(options);
  settings.prefix = prefix;
  instance.config = env.write_config(
      settings, name + ".toml", {},
      format("\n[ha]\nelection_prefix = \"/etcd-sync/%s/election/\"\ninstance_id = \"%s\"\n", name.c_str(), name.c_str()));
  // [postgresql] schema: after the dsn line, in the file and in its copy in the output dir.
  auto text = testing::read_text_file(instance.config);
  const auto at = text.find('\n', text.find("[postgresql]\ndsn = "));
  text.insert(at + 1, "schema = \"" + instance.schema + "\"\n");
  for (const auto& path : {instance.config, options.out_dir / "two-prefix" / (name + ".toml")}) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
  }
  auto migrated = testing::run_command(env.service.binary(), {"migrate", "-c", instance.config.string()});
  if (migrated.exit_code != 0)
    throw std::runtime_error("etcd-sync migrate of " + name + " failed: " + migrated.stdout_text + migrated.stderr_text);
  install_seen_trigger(env.env.db(), instance.schema);
  instance.service =
      std::make_unique<ServiceUnderTest>(env.service.binary(), options.out_dir / "two-prefix" / (name + ".log"));
  return instance;
}

void start_instance(Instance& instance) {
  instance.service->start({"start", "-c", instance.config.string()});
  for (const char* needle : {"\"to\":\"watching\"", "outbox barrier raised"})
    if (!instance.service->wait_for_log(needle, 30s))
      throw std::runtime_error("etcd-sync " + instance.name + " did not start (no " + needle +
                               "):\n" + instance.service->log_text());
}

/// The figures of one prefix's load after it ran.
struct PrefixFigures {
  MirrorLatency mirror;
  Distribution outbox_ms;  ///< COMMIT returned -> event on the Watch
  std::int64_t rows_success = 0;
  double wal_rate = 0;
  bool complete = false;  ///< every put mirrored and every row applied and seen
};

PrefixFigures figures_of(testing::PgClient& db, const PrefixLoad& load) {
  PrefixFigures f;
  f.mirror = mirror_latency(load.puts.puts, read_seen(db, load.schema));
  std::vector<double> outbox;
  std::int64_t first = INT64_MAX, last = 0;
  for (const auto& row : load.wal.rows) {
    first = std::min(first, row.committed_us);
    last = std::max(last, row.committed_us);
    if (row.seen_us != 0 && row.committed_us != 0) outbox.push_back((row.seen_us - row.committed_us) / 1000.0);
  }
  f.outbox_ms = distribution(outbox);
  f.wal_rate = last > first ? (load.wal.rows.size() - 1) / ((last - first) / 1e6) : 0;
  f.rows_success = std::stoll(db.exec_params("SELECT count(*) FROM \"" + load.schema +
                                                 "\".etcd_wal WHERE status = 'success' AND starts_with(key, $1)",
                                             {load.wal.key_prefix})[0][0]
                                  .value_or("0"));
  f.complete = f.mirror.missing == 0 && f.rows_success == static_cast<std::int64_t>(load.wal.rows.size()) &&
               load.wal.seen == load.wal.rows.size();
  return f;
}

void print_figures(const PrefixLoad& load, const PrefixFigures& f) {
  detail(format("%s mirror: %zu puts at %.0f puts/s, %zu revisions not seen in PostgreSQL; put commit -> row visible %s",
                load.prefix.c_str(), f.mirror.puts, f.mirror.achieved_rate, f.mirror.missing,
                describe_ms(f.mirror.visible_ms).c_str()));
  detail(format("%s etcd Put round trip %s", load.prefix.c_str(), describe_ms(f.mirror.put_ms).c_str()));
  detail(format("%s outbox: %zu rows at %.0f rows/s, %lld success, %zu seen on the watch; COMMIT -> etcd event %s",
                load.prefix.c_str(), load.wal.rows.size(), f.wal_rate, static_cast<long long>(f.rows_success),
                load.wal.seen, describe_ms(f.outbox_ms).c_str()));
}

std::unique_ptr<PrefixLoad> make_load(Loop& loop, const std::string& conninfo, const std::string& prefix,
                                      const std::string& schema, const std::string& phase, const BenchOptions& options) {
  auto load = std::make_unique<PrefixLoad>();
  load->prefix = prefix;
  load->schema = schema;
  load->puts.key_prefix = prefix + "lat/";
  load->puts.value.assign(options.value_bytes, 'v');
  load->puts.limit = static_cast<std::size_t>(options.rate * options.latency_seconds);
  load->wal.schema = schema;
  load->wal.key_prefix = prefix + "wal-" + phase + "/";  // fresh keys: a NULL base revision means absent
  load->wal.value.assign(options.value_bytes, 'w');
  load->wal.rows.resize(static_cast<std::size_t>(wal_rate * options.latency_seconds));
  for (int i = 0; i < inserters_per_prefix; ++i)
    load->wal.pool.push_back(std::make_unique<PgConnection>(loop.io(), conninfo, "bench-" + schema + "-" + std::to_string(i)));
  return load;
}

/// Waits until the instance's checkpoint reaches the last revision of `puts`.
bool wait_mirrored(testing::PgClient& db, const Instance& instance, const PacedPuts& puts) {
  std::int64_t last = 0;
  for (const auto& p : puts.puts) last = std::max(last, p.revision);
  const auto sql = "SELECT revision FROM \"" + instance.schema + "\".etcd_sync_checkpoint WHERE prefix = $1";
  return testing::wait_until(
      [&] { return std::stoll(db.exec_params(sql, {instance.prefix})[0][0].value_or("0")) >= last; }, 60s, 20ms);
}

/// What one phase measured: each load's figures, and the CPU of etcd, PostgreSQL and each instance.
struct Phase {
  std::vector<PrefixFigures> figures;
  std::vector<double> cpu;
};

/// Runs the loads of /bench/a/ and /bench/b/ at once, each in the schema of `owners[i]` (the
/// instance that owns it), with keys of their own for `phase`; waits for the mirrors to reach the
/// loads' last revisions; prints `heading`, the figures, and the CPU of etcd, PostgreSQL and each of
/// `instances` (named etcd-sync <name>, or plain etcd-sync when there is one).
Phase run_phase(BenchEnv& env, const BenchOptions& options, const std::vector<const Instance*>& owners,
                const std::vector<const Instance*>& instances, const std::string& phase, const std::string& heading) {
  auto& db = env.env.db();
  Loop loop(env.etcd_endpoint());
  std::vector<std::unique_ptr<PrefixLoad>> loads;
  loads.push_back(make_load(loop, env.conninfo(), "/bench/a/", owners[0]->schema, phase, options));
  loads.push_back(make_load(loop, env.conninfo(), "/bench/b/", owners[1]->schema, phase, options));
  std::vector<CpuShare::Process> processes{{"etcd", env.env.etcd.pid()}, {"postgres", env.env.postgres.pid(), true}};
  for (const auto* instance : instances)
    processes.push_back({instances.size() > 1 ? "etcd-sync " + instance->name : "etcd-sync", instance->service->pid()});
  CpuShare cpu(std::move(processes));
  cpu.start();
  loop.run(run_loads(loop, {loads[0].get(), loads[1].get()}, options.rate));
  const auto cpu_line = cpu.stop();
  Phase out;
  for (std::size_t i = 0; i <= instances.size() + 1; ++i) out.cpu.push_back(cpu.percent(i));
  for (std::size_t i = 0; i < loads.size(); ++i) {
    for (auto& pg : loads[i]->wal.pool) pg->close();
    if (!wait_mirrored(db, *owners[i], loads[i]->puts))
      detail("NOTE: the mirror of " + loads[i]->prefix + " did not reach the load's last revision within 60 s");
  }
  detail(heading);
  for (const auto& load : loads) {
    out.figures.push_back(figures_of(db, *load));
    print_figures(*load, out.figures.back());
  }
  detail(cpu_line);
  return out;
}

}  // namespace

Outcome run_two_prefix(const BenchOptions& options) {
  std::printf("== (k) two prefixes, two instances: each %.0f puts/s and %.0f etcd_wal rows/s for %.0f s; then one "
              "instance with both ==\n",
              options.rate, wal_rate, options.latency_seconds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "two-prefix", settings, options);
  detail("servers: " + env.versions());

  // --- two instances, one prefix and one schema each ---
  auto a = make_instance(env, options, "a", "/bench/a/");
  auto b = make_instance(env, options, "b", "/bench/b/");
  start_instance(a);
  start_instance(b);
  detail("instances: a (prefix /bench/a/, schema bench_a, election_prefix /etcd-sync/a/election/) and b (/bench/b/, "
         "bench_b, /etcd-sync/b/election/), both leading their own group");
  const auto two = run_phase(env, options, {&a, &b}, {&a, &b}, "1", "two instances:");
  a.service->terminate();
  b.service->terminate();

  // --- the same two loads on one instance with prefix /bench/ ---
  auto one = make_instance(env, options, "one", bench_prefix);
  start_instance(one);
  detail("one instance: prefix /bench/, schema bench_one, election_prefix /etcd-sync/one/election/ (its snapshot "
         "took the keys written above)");
  const auto both = run_phase(env, options, {&one, &one}, {&one}, "2", "one instance, both loads:");
  one.service->terminate();
  detail("load average after: " + load_average());

  const auto& fa = two.figures[0];
  const auto& fb = two.figures[1];
  const auto& oa = both.figures[0];
  const auto& ob = both.figures[1];
  const bool complete = fa.complete && fb.complete && oa.complete && ob.complete;
  return {"k two-prefix",
          format("two instances, each %.0f puts/s + %.0f rows/s: mirror p99 a %.2f, b %.2f ms; outbox p99 a %.2f, b %.2f "
                 "ms; CPU etcd %.0f%%, postgres %.0f%%, etcd-sync a %.0f%%, b %.0f%%. One instance, both loads: mirror "
                 "p99 a %.2f, b %.2f ms; outbox p99 a %.2f, b %.2f ms; CPU etcd %.0f%%, postgres %.0f%%, etcd-sync %.0f%% "
                 "(no target; %s)",
                 options.rate, wal_rate, fa.mirror.visible_ms.p99, fb.mirror.visible_ms.p99, fa.outbox_ms.p99,
                 fb.outbox_ms.p99, two.cpu[0], two.cpu[1], two.cpu[2], two.cpu[3], oa.mirror.visible_ms.p99,
                 ob.mirror.visible_ms.p99, oa.outbox_ms.p99, ob.outbox_ms.p99, both.cpu[0], both.cpu[1], both.cpu[2],
                 complete ? "every put mirrored and every row applied" : "NOT everything applied"),
          complete};
}

}  // namespace etcd_sync::bench
