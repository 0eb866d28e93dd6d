// (f) Catch-up after downtime: etcd-sync is started once and catches up on the prefix, then
// stopped (SIGTERM); while it is down, --catchup-events puts are written to etcd (distinct keys,
// Txns of 128 puts, 16 in flight, as (d) loads etcd); then it is started again and we time from
// the start until its checkpoint reaches etcd's revision. The reference, in the same run and on
// the same PostgreSQL with etcd-sync stopped: the same rows (key, value, revision and the
// metadata the mirror writes) sent with one COPY ... FROM STDIN into a twin of `etcd`
// (CREATE TABLE ... (LIKE etcd INCLUDING ALL): same columns, defaults, constraints and indexes).

#include "perf/bench_env.hpp"
#include "perf/etcd_load.hpp"
#include "perf/steady_load.hpp"
#include "adapters/etcd_watch.hpp"

#include <thread>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

std::string catch_up_key(int i) { return format("/bench/catchup/%07d", i); }

struct WatchFigures {
  double seconds = 0;
  std::int64_t events = 0;
};

/// etcd's own delivery of the same history: a plain Watch on the prefix from `from_revision`, read
/// until an event at `to_revision` arrived (nothing is written meanwhile).
asio::awaitable<void> watch_history(Loop& loop, std::int64_t from_revision, std::int64_t to_revision, WatchFigures& out) {
  auto watch = loop.etcd().open_watch();
  const auto create = prefix_watch(bench_prefix, from_revision);
  const auto began = Clock::now();
  co_await watch->start(create);
  std::int64_t seen = 0;
  while (seen < to_revision) {
    auto response = co_await watch->read();
    if (!response) break;
    out.events += response->events_size();
    for (const auto& event : response->events()) seen = std::max(seen, event.kv().mod_revision());
  }
  out.seconds = seconds_since(began);
  watch->cancel();
  while (co_await watch->read()) {
  }
  co_await watch->finish();
  if (seen < to_revision) throw std::runtime_error("the reference watch ended before revision " + std::to_string(to_revision));
}

asio::awaitable<std::int64_t> current_revision(EtcdClient& etcd) { co_return co_await etcd_revision(etcd); }

}  // namespace

Outcome run_catch_up(const BenchOptions& options) {
  std::printf("== (f) catch-up after downtime: %d events written while etcd-sync was stopped ==\n",
              options.catchup_events);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "catch-up", settings, options);
  detail("servers: " + env.versions());

  // Caught up once, then stopped: the checkpoint says where to resume.
  env.start_service();
  Loop loop(env.etcd_endpoint());
  const auto first_revision = loop.run(current_revision(loop.etcd()));
  if (!env.env.wait_mirrored(first_revision, 20s, bench_prefix))
    throw std::runtime_error("the mirror did not catch up before the downtime");
  if (int code = env.stop_service(); code != 0) detail(format("NOTE: etcd-sync exited with %d on SIGTERM", code));
  const auto checkpoint_before = env.env.checkpoint(bench_prefix);

  TxnLoad load;
  load.total = options.catchup_events;
  load.key = catch_up_key;
  load.value.assign(options.value_bytes, 'v');
  auto load_began = Clock::now();
  loop.run(load_etcd(loop, load, options.load_concurrency));
  const double load_seconds = seconds_since(load_began);
  const auto revision = loop.run(current_revision(loop.etcd()));
  detail(format("while etcd-sync was stopped (checkpoint %lld): %lld puts in %.1f s (etcd accepted %.0f puts/s, Txns "
                "of %d puts, %d in flight); etcd's revision is now %lld",
                static_cast<long long>(checkpoint_before), static_cast<long long>(load.loaded), load_seconds,
                load.loaded / load_seconds, puts_per_txn, options.load_concurrency, static_cast<long long>(revision)));

  // Started again: from the start of the process until the checkpoint reaches etcd's revision.
  env.service.mark_log();
  const auto started_us = wall_micros();
  const auto began = Clock::now();
  env.spawn_service();
  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  cpu.start();
  bool done = false;
  while (seconds_since(began) < 600) {
    if (!env.service.running()) throw std::runtime_error("etcd-sync exited during the catch-up:\n" + env.service.log_text());
    if (env.env.checkpoint(bench_prefix) >= revision) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  const double seconds = seconds_since(began);
  const auto cpu_line = cpu.stop();
  if (!done) throw std::runtime_error(format("the checkpoint did not reach revision %lld in 600 s", static_cast<long long>(revision)));
  const auto log = env.service.log_since_mark();
  const auto watching_us = log_line_time(log, {"\"to\":\"watching\""});
  const double events_per_second = load.loaded / seconds;
  detail(format("etcd-sync start -> checkpoint at revision %lld: %.2f s, %.0f events/s", static_cast<long long>(revision),
                seconds, events_per_second));
  if (watching_us)
    detail(format("of which start -> mirror watching (log): %.2f s; watching -> caught up %.2f s (%.0f events/s)",
                  (*watching_us - started_us) / 1e6, seconds - (*watching_us - started_us) / 1e6,
                  load.loaded / (seconds - (*watching_us - started_us) / 1e6)));
  detail(cpu_line);
  env.stop_service();
  auto rows = std::stoll(env.env.db().scalar("SELECT count(*) FROM etcd WHERE starts_with(key, '/bench/catchup/')").value_or("0"));
  detail(format("rows of the written keys in etcd table: %lld of %lld (%s)", rows, static_cast<long long>(load.loaded),
                rows == load.loaded ? "every event mirrored once" : "MISMATCH"));

  WatchFigures watched;
  loop.run(watch_history(loop, checkpoint_before + 1, revision, watched));
  detail(format("etcd's own delivery of the same events to a plain Watch in the generator (from revision %lld, "
                "etcd-sync stopped): %lld events in %.2f s, %.0f events/s",
                static_cast<long long>(checkpoint_before + 1), static_cast<long long>(watched.events), watched.seconds,
                watched.events / watched.seconds));

  // The reference: the same rows with COPY into a twin of `etcd`, etcd-sync stopped.
  const auto copy = time_twin_copy(loop, env, load, env.service_pid());
  const double copy_rate = copy.rows / copy.seconds;
  detail("load average after: " + load_average());

  const double ratio = copy_rate > 0 ? events_per_second / copy_rate : 0;
  const bool met = rows == load.loaded && ratio >= 0.8;
  return {"f catch-up",
          format("%lld events caught up at %.0f events/s, COPY %.0f rows/s, ratio %.3f (target >= 0.8: %s)",
                 static_cast<long long>(load.loaded), events_per_second, copy_rate, ratio, met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
