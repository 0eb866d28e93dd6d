// (c) PostgreSQL -> etcd: the outbox's maximum throughput, and its latency at a fixed row rate.
//
// Throughput: one INSERT ... SELECT generate_series of distinct keys (one transaction, one NOTIFY),
// then the time from its COMMIT returning until the last row's outcome is written (max(applied_at),
// set by the outbox's outcome transaction).
//
// Latency: rows are inserted open-loop at fixed times, each in its own transaction, from a few
// connections (so one slow commit does not hold back the schedule). A Watch on the keys' prefix,
// opened before the first insert, records when each key's event arrives. Latency = event seen -
// COMMIT returned, both on this machine's wall clock.
//
// The throughput's reference, in the same run before etcd-sync starts: etcd's own accept rate for
// the same number of puts with the same values, in Txns of 128 puts (etcd 3.4's default
// --max-txn-ops), 16 in flight, on keys outside the prefix (they collide with nothing the burst
// writes, and the service never mirrors them).

#include "perf/bench_env.hpp"
#include "perf/etcd_load.hpp"
#include "adapters/etcd_watch.hpp"
#include "reactor/loop/wakeup.hpp"


namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

const std::string latency_prefix = "/bench/wal-lat/";

struct TimedRow {
  std::int64_t committed_us = 0;  // the INSERT's autocommit returned to the generator
  std::int64_t server_us = 0;     // clock_timestamp() at the end of the INSERT, inside PostgreSQL
  std::int64_t seen_us = 0;
  double insert_ms = 0;
  double late_ms = 0;
};

struct WalLatency {
  std::vector<TimedRow> rows;
  std::size_t seen = 0;
  std::string value;
  std::unique_ptr<WatchStream> stream;
  Wakeup* all_seen = nullptr;
  int inserters_running = 0;
  std::exception_ptr failure;
};

asio::awaitable<void> read_events(WatchStream& stream, WalLatency& state) {
  while (auto response = co_await stream.read()) {
    auto now = wall_micros();
    for (const auto& event : response->events()) {
      const auto& key = event.kv().key();
      if (key.rfind(latency_prefix, 0) != 0) continue;
      auto index = std::stoul(key.substr(latency_prefix.size()));
      if (index < state.rows.size() && state.rows[index].seen_us == 0) {
        state.rows[index].seen_us = now;
        if (++state.seen == state.rows.size()) state.all_seen->notify();
      }
    }
  }
}

/// Inserts rows first, first + step, ... each at its scheduled time, on its own connection.
asio::awaitable<void> insert_rows(PgConnection& pg, WalLatency& state, std::size_t first, std::size_t step,
                                  Clock::time_point start, std::chrono::nanoseconds period) {
  for (std::size_t i = first; i < state.rows.size(); i += step) {
    auto due = start + period * static_cast<std::int64_t>(i);
    co_await sleep_until(due);
    auto sent = Clock::now();
    state.rows[i].late_ms = std::chrono::duration<double, std::milli>(sent - due).count();
    auto result = co_await pg.query(
        "INSERT INTO etcd_wal (key, value) VALUES ($1, $2) RETURNING (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        pg_params(PgParam::text(latency_prefix + std::to_string(i)), PgParam::text(state.value)));
    state.rows[i].committed_us = wall_micros();
    state.rows[i].server_us = result.int64(0, 0);
    state.rows[i].insert_ms = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
  }
}

asio::awaitable<void> latency_run(Loop& loop, std::vector<std::unique_ptr<PgConnection>>& pool, WalLatency& state,
                                  double rate) {
  for (auto& pg : pool) co_await pg->connect(5s);
  // Watch the keys from etcd's current revision and wait for the watch to be created, so that no
  // event can be missed.
  auto from = co_await etcd_revision(loop.etcd()) + 1;
  state.stream = loop.etcd().open_watch();
  const auto create = prefix_watch(latency_prefix, from);
  co_await state.stream->start(create);
  auto created = co_await state.stream->read();
  if (!created || !created->created()) throw std::runtime_error("the watch was not created");

  Wakeup all_seen(loop.io());
  state.all_seen = &all_seen;
  bool reader_done = false;
  asio::co_spawn(loop.io(), read_events(*state.stream, state), [&reader_done, &all_seen](std::exception_ptr) {
    reader_done = true;
    all_seen.notify();
  });

  Wakeup inserted(loop.io());
  const auto period = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate));
  const auto start = Clock::now() + 20ms;
  for (std::size_t j = 0; j < pool.size(); ++j) {
    ++state.inserters_running;
    asio::co_spawn(loop.io(), insert_rows(*pool[j], state, j, pool.size(), start, period),
                   [&state, &inserted](std::exception_ptr e) {
                     if (e && !state.failure) state.failure = e;
                     --state.inserters_running;
                     inserted.notify();
                   });
  }
  while (state.inserters_running > 0) co_await inserted.wait(1s);
  auto deadline = Clock::now() + 30s;
  while (state.seen < state.rows.size() && !reader_done && Clock::now() < deadline) co_await all_seen.wait(1s);
  state.stream->cancel();
  while (!reader_done) co_await all_seen.wait(1s);
  co_await state.stream->finish();
  // The pool stays open until the CPU window is read: a backend that exits inside the window takes
  // its CPU time with it, and would be counted as "other processes".
  if (state.failure) std::rethrow_exception(state.failure);
}

}  // namespace

Outcome run_outbox(const BenchOptions& options) {
  std::printf("== (c) PostgreSQL -> etcd: %d etcd_wal rows in one INSERT, then %.0f rows/s for %.0f s ==\n",
              options.wal_rows, options.rate, options.latency_seconds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "outbox", settings, options);
  const std::string value(options.value_bytes, 'v');

  // --- the throughput's reference: etcd's accept rate for the same puts, etcd-sync not started ---
  TxnLoad reference;
  reference.total = options.wal_rows;
  reference.key = [](int i) { return format("/bench-reference/wal/%d", i + 1); };
  reference.value = value;
  double reference_seconds = 0;
  std::string reference_cpu;
  {
    Loop loop(env.etcd_endpoint());
    CpuShare reference_share(0, env.env.etcd.pid(), env.env.postgres.pid());
    reference_share.start();
    const auto began = Clock::now();
    loop.run(load_etcd(loop, reference, options.load_concurrency));
    reference_seconds = seconds_since(began);
    reference_cpu = reference_share.stop();
  }
  const double reference_rate = reference.loaded / reference_seconds;

  env.start_service();
  detail("servers: " + env.versions() + format("; direction %s, batch_size %d", settings.direction.c_str(), settings.batch_size));
  detail(format("reference, before etcd-sync started: etcd accepted the same %lld puts (%d-byte values, keys outside "
                "the prefix) in %.2f s, %.0f puts/s (Txns of %d puts, %d in flight)",
                static_cast<long long>(reference.loaded), options.value_bytes, reference_seconds, reference_rate,
                puts_per_txn, options.load_concurrency));
  detail("during the reference: " + reference_cpu);
  auto& db = env.env.db();
  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());

  if (options.wal_history > 0) {
    // A table of long history, analyzed while nothing was pending (as autovacuum does in a quiet
    // hour): PostgreSQL's planner then believes the pending rows' indexes empty.
    db.exec_params("INSERT INTO etcd_wal (key, value, status, applied_at) SELECT '/bench/history/' || g, $1, "
                   "'success', now() - interval '1 day' FROM generate_series(1, $2::int) g",
                   {value, std::to_string(options.wal_history)});
    db.exec("VACUUM ANALYZE etcd_wal");
    detail(format("etcd_wal holds %d settled rows, analyzed before the burst (--wal-history)", options.wal_history));
  }

  // --- throughput ---
  cpu.start();
  db.exec_params("INSERT INTO etcd_wal (key, value) SELECT '/bench/wal/' || g, $1 FROM generate_series(1, $2::int) g",
                 {value, std::to_string(options.wal_rows)});
  auto committed_us = wall_micros();
  auto began = Clock::now();
  // The poll only says when to stop (the figure comes from applied_at): EXISTS on the pending index
  // every 100 ms, since a count(*) every 50 ms took a tenth of PostgreSQL's time in the burst.
  bool drained = testing::wait_until(
      [&] { return db.scalar("SELECT NOT EXISTS (SELECT 1 FROM etcd_wal WHERE status = 'pending')") == "t"; }, 180s,
      100ms);
  auto cpu_throughput = cpu.stop();
  auto row = db.exec(
      "SELECT (extract(epoch FROM min(applied_at)) * 1000000)::bigint, (extract(epoch FROM max(applied_at)) * 1000000)::bigint, "
      "count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status <> 'success') FROM etcd_wal "
      "WHERE starts_with(key, '/bench/wal/')")[0];
  double seconds = drained && row[1] ? (std::stoll(*row[1]) - committed_us) / 1e6 : seconds_since(began);
  double throughput = drained ? std::stoll(*row[2]) / seconds : 0;
  detail(format("%d rows: all processed %s in %.2f s after COMMIT (first outcome after %.1f ms): %.0f rows/s; "
                "%s success, %s other",
                options.wal_rows, drained ? "" : "NOT (timed out)", seconds,
                row[0] ? (std::stoll(*row[0]) - committed_us) / 1e3 : -1.0, throughput, row[2]->c_str(),
                row[3]->c_str()));
  detail(cpu_throughput);
  // The mirror brings each write back into `etcd`; wait for it so the latency run starts quiet.
  auto revision = env.env.client->revision();
  env.env.wait_mirrored(revision, 120s, bench_prefix);

  // --- latency at a fixed rate ---
  Loop loop(env.etcd_endpoint());
  std::vector<std::unique_ptr<PgConnection>> pool;
  for (int i = 0; i < options.inserters; ++i)
    pool.push_back(std::make_unique<PgConnection>(loop.io(), env.conninfo(), "bench-" + std::to_string(i)));
  WalLatency state;
  state.value = value;
  state.rows.resize(static_cast<std::size_t>(options.rate * options.latency_seconds));
  cpu.start();
  auto latency_began = Clock::now();
  loop.run(latency_run(loop, pool, state, options.rate));
  auto cpu_latency = cpu.stop();
  for (auto& pg : pool) pg->close();
  std::vector<double> latency, from_server, insert_ms, late;
  std::int64_t first_commit = INT64_MAX, last_commit = 0;
  for (const auto& r : state.rows) {
    insert_ms.push_back(r.insert_ms);
    late.push_back(r.late_ms);
    first_commit = std::min(first_commit, r.committed_us);
    last_commit = std::max(last_commit, r.committed_us);
    if (r.seen_us == 0) continue;
    latency.push_back((r.seen_us - r.committed_us) / 1000.0);
    from_server.push_back((r.seen_us - r.server_us) / 1000.0);
  }
  std::vector<double> to_success;
  for (const auto& r : db.exec("SELECT key, (extract(epoch FROM applied_at) * 1000000)::bigint FROM etcd_wal "
                               "WHERE starts_with(key, '" + latency_prefix + "') AND applied_at IS NOT NULL")) {
    auto index = std::stoul(r[0]->substr(latency_prefix.size()));
    if (index < state.rows.size()) to_success.push_back((std::stoll(*r[1]) - state.rows[index].committed_us) / 1000.0);
  }
  double achieved = (state.rows.size() - 1) / ((last_commit - first_commit) / 1e6);
  auto d = distribution(latency);
  detail(format("%zu rows committed over %.2f s: %.0f rows/s; %zu seen on the watch; run %.2f s",
                state.rows.size(), (last_commit - first_commit) / 1e6, achieved, state.seen,
                seconds_since(latency_began)));
  detail("COMMIT returned -> event on etcd watch:      " + describe_ms(d));
  detail("INSERT ended in PostgreSQL -> event on watch: " + describe_ms(distribution(from_server)));
  detail("COMMIT returned -> outcome written:          " + describe_ms(distribution(to_success)) +
         " (applied_at: now() of the outcome transaction)");
  detail("INSERT round trip (autocommit):              " + describe_ms(distribution(insert_ms)));
  detail("generator lateness vs schedule:              " + describe_ms(distribution(late)));
  detail(cpu_latency);
  detail("load average after: " + load_average());
  env.stop_service();
  const double ratio = reference_rate > 0 ? throughput / reference_rate : 0;
  bool met = drained && ratio >= 0.7 && state.seen == state.rows.size() && d.p99 <= 10.0;
  return {"c outbox",
          format("burst %.0f rows/s, reference etcd %.0f puts/s (Txns of %d, %d in flight), ratio %.3f (target >= 0.7); "
                 "at %.0f rows/s commit -> etcd event p50 %.2f ms, p99 %.2f ms, max %.2f ms (target p99 <= 10 ms): %s",
                 throughput, reference_rate, puts_per_txn, options.load_concurrency, ratio, achieved, d.p50, d.p99,
                 d.max, met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
