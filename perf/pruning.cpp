// (g) Pruning under load: --prune-rows history rows (keys of 10 versions each) are written
// straight into `etcd` before etcd-sync starts, at revisions below etcd's current one (etcd is
// first advanced that far by puts outside the prefix), shaped as Txns of 128 puts would leave
// them, with the matching checkpoint; then etcd-sync starts with [history] keep_versions = 1 while
// puts flow open-loop at --rate on other keys under the prefix. The mirror's latency is (b)'s:
// put answered -> row visible, from the deferred trigger, over the puts sent during the pruning
// pass (its start and end from the service's "history pruned" log line), and over the 10 s after
// it (the pruner resting: the same run's baseline). Pruned rows/s is that line's rows over its
// seconds, checked against etcd_sync_history_pruned_rows_total on /metrics.

#include "perf/bench_env.hpp"
#include "perf/mirror_latency.hpp"
#include "perf/steady_load.hpp"
#include "test/support/ports.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <sstream>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

constexpr int versions_per_key = 10;

/// The body of GET /metrics from the service's [metrics] listener on 127.0.0.1:`port`.
std::string fetch_metrics(int port) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(5s);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  http::request<http::empty_body> request{http::verb::get, "/metrics", 11};
  request.set(http::field::host, "127.0.0.1");
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response);
  return response.body();
}

/// The value of an unlabelled sample `name` in Prometheus text, or -1.
double metric_value(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

/// The service's "history pruned" log line: rows of the pass and its seconds; the line's time.
struct PassLine {
  std::int64_t rows = 0;
  double seconds = 0;
  std::int64_t ended_us = 0;
};

std::optional<PassLine> pass_line(const std::string& log) {
  auto at = log.find("\"history pruned\"");
  if (at == std::string::npos) return std::nullopt;
  auto begin = log.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  const auto end = log.find('\n', at);
  if (end == std::string::npos) return std::nullopt;  // the line is still being written
  const auto line = log.substr(begin, end - begin);
  auto ended = log_line_time(line, {"history pruned"});
  if (!ended) return std::nullopt;
  try {
    auto json = nlohmann::json::parse(line);
    return PassLine{json.at("rows").get<std::int64_t>(), json.at("seconds").get<double>(), *ended};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

struct PruneRun {
  PacedPuts puts;
  ServiceUnderTest* service = nullptr;
  std::optional<PassLine> pass;
  double tail_seconds = 10;      ///< the load goes on this long after the pass ended
  double deadline_seconds = 900;
};

/// Watches the service's log for the end of the pruning pass, then lets the load run its tail and stops it.
asio::awaitable<void> watch_pass(PruneRun& run) {
  const auto began = Clock::now();
  while (!run.pass && seconds_since(began) < run.deadline_seconds && run.service->running()) {
    co_await sleep_for(100ms);
    run.pass = pass_line(run.service->log_since_mark());
  }
  if (run.pass) co_await sleep_for(std::chrono::milliseconds(static_cast<int>(run.tail_seconds * 1000)));
  run.puts.stop = true;
}

asio::awaitable<void> prune_under_load(Loop& loop, PgConnection& pg, PruneRun& run, double rate) {
  co_await pg.connect(5s);
  asio::co_spawn(loop.io(), watch_pass(run), asio::detached);
  co_await pace_puts(loop, run.puts, rate);
  std::int64_t last = 0;
  for (const auto& p : run.puts.puts) last = std::max(last, p.revision);
  co_await wait_checkpoint(pg, last, 60s);
  pg.close();
}

}  // namespace

Outcome run_pruning(const BenchOptions& options) {
  const int keys = std::max(1, options.prune_rows / versions_per_key);
  const std::int64_t rows = static_cast<std::int64_t>(keys) * versions_per_key;
  std::printf("== (g) pruning %lld history rows (%d keys x %d versions) to keep_versions = 1 under %.0f puts/s ==\n",
              static_cast<long long>(rows), keys, versions_per_key, options.rate);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "pruning", settings, options);
  const int metrics_port = testing::free_loopback_port();
  env.use_config(env.write_config(settings, "etcd-sync.toml", {},
                                  format("\n[history]\nkeep_versions = 1\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n",
                                         metrics_port)));
  env.migrate();
  detail("servers: " + env.versions());

  // etcd's revision first goes past the history's revisions (puts outside the prefix), so the
  // history and the checkpoint are where a mirror that had seen them would be.
  const int txns_per_version = (keys + 127) / 128;
  const int history_revisions = txns_per_version * versions_per_key;
  auto setup_began = Clock::now();
  {
    std::vector<std::pair<std::string, std::string>> pad(static_cast<std::size_t>(history_revisions) + 1,
                                                         {"/bench-pad/revision", "x"});
    env.env.client->put_many(pad, 64);
  }
  const auto base_revision = env.env.client->revision() - history_revisions;  // the first history revision
  auto& db = env.env.db();
  db.exec(format("INSERT INTO etcd (key, value, revision, create_revision, version, lease) "
                 "SELECT '/bench/hist/' || lpad(k::text, 7, '0'), repeat('v', %d), "
                 "       %lld + v * %d + k / 128, %lld + k / 128, v + 1, 0 "
                 "  FROM generate_series(0, %d) k, generate_series(0, %d) v",
                 options.value_bytes, static_cast<long long>(base_revision), txns_per_version,
                 static_cast<long long>(base_revision), keys - 1, versions_per_key - 1));
  const auto checkpoint = env.env.client->revision();
  db.exec_params("INSERT INTO etcd_sync_checkpoint (prefix, revision) VALUES ($1, $2)",
                 {bench_prefix, std::to_string(checkpoint)});
  db.exec("VACUUM ANALYZE etcd");  // what autovacuum would have done for a table written over time
  install_seen_trigger(db);
  auto table_size = db.scalar("SELECT pg_size_pretty(pg_total_relation_size('etcd'))").value_or("?");
  detail(format("history written straight into etcd table in %.1f s: %lld rows at revisions %lld..%lld, table with "
                "indexes %s; checkpoint %lld = etcd's revision",
                seconds_since(setup_began), static_cast<long long>(rows), static_cast<long long>(base_revision),
                static_cast<long long>(base_revision + history_revisions - 1), table_size.c_str(),
                static_cast<long long>(checkpoint)));

  env.service.mark_log();
  env.start_service();
  Loop loop(env.etcd_endpoint());
  PgConnection pg(loop.io(), env.conninfo(), "bench");
  PruneRun run;
  run.service = &env.service;
  run.puts.value.assign(options.value_bytes, 'v');
  run.puts.limit = static_cast<std::size_t>(options.rate * (run.deadline_seconds + 60));
  const auto load_began_us = wall_micros();
  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  cpu.start();
  loop.run(prune_under_load(loop, pg, run, options.rate));
  if (!run.pass) throw std::runtime_error("no pruning pass ended within the deadline:\n" + env.service.log_since_mark());
  const auto cpu_line = cpu.stop();  // includes the tail and the drain after the pass

  const auto& pass = *run.pass;
  const auto pass_began_us = pass.ended_us - static_cast<std::int64_t>(pass.seconds * 1e6);
  const auto seen = read_seen(db);
  auto during = mirror_latency(run.puts.puts, seen, [&](const TimedPut& p) {
    return p.sent_us >= pass_began_us && p.sent_us <= pass.ended_us;
  });
  auto after = mirror_latency(run.puts.puts, seen, [&](const TimedPut& p) { return p.sent_us > pass.ended_us; });
  const double pruned_rate = pass.seconds > 0 ? pass.rows / pass.seconds : 0;
  double metric = -1;
  try {
    metric = metric_value(fetch_metrics(metrics_port), "etcd_sync_history_pruned_rows_total");
  } catch (const std::exception& e) {
    detail(std::string("NOTE: /metrics could not be read: ") + e.what());
  }
  detail(format("pruning pass: %lld rows in %.2f s, %.0f rows/s; etcd_sync_history_pruned_rows_total %.0f; the load "
                "began %.2f s after the pass",
                static_cast<long long>(pass.rows), pass.seconds, pruned_rate, metric,
                (load_began_us - pass_began_us) / 1e6));
  detail(format("during the pass: %zu puts, %.0f puts/s achieved, %zu revisions not seen in PostgreSQL", during.puts,
                during.achieved_rate, during.missing));
  print_mirror_latency(during);
  detail(format("after the pass, the pruner resting (%.0f s, the same run's baseline): %zu puts, %.0f puts/s achieved, "
                "%zu revisions not seen", run.tail_seconds, after.puts, after.achieved_rate, after.missing));
  print_mirror_latency(after);
  detail("from the load's start to the end of its tail: " + cpu_line);
  env.stop_service();
  auto kept = db.exec("SELECT count(*), count(DISTINCT key), count(*) FILTER (WHERE version = " +
                      std::to_string(versions_per_key) + ") FROM etcd WHERE starts_with(key, '/bench/hist/')");
  const auto kept_rows = std::stoll(*kept[0][0]), kept_keys = std::stoll(*kept[0][1]), kept_latest = std::stoll(*kept[0][2]);
  const bool correct = kept_rows == keys && kept_keys == keys && kept_latest == keys;
  detail(format("history keys left: %lld rows for %lld keys, %lld of them the latest version (%s)", kept_rows, kept_keys,
                kept_latest, correct ? "each key kept exactly its latest row" : "MISMATCH"));
  detail("load average after: " + load_average());

  const auto& d = during.visible_ms;
  const bool met = correct && during.missing == 0 && during.puts > 0 && d.p99 < 10.0;
  return {"g pruning",
          format("%lld rows pruned at %.0f rows/s; mirror at %.0f puts/s meanwhile: commit -> row visible p50 %.2f ms, "
                 "p99 %.2f ms, max %.2f ms (after the pass p99 %.2f ms) (target p99 < 10 ms: %s)",
                 static_cast<long long>(pass.rows), pruned_rate, during.achieved_rate, d.p50, d.p99, d.max,
                 after.visible_ms.p99, met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
