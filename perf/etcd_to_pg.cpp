// (a) etcd -> PostgreSQL saturation and (b) etcd -> PostgreSQL latency at a fixed put rate.
//
// (a) N coroutines each keep one Put in flight, as fast as etcd answers, for a fixed window after a
// warm-up. etcd's accepted puts/s and the mirror's rows/s (its checkpoint moves one revision per
// row, since only the generator writes) are taken over the same window; their ratio says whether
// the mirror keeps up with everything etcd accepts.
//
// (b) Puts are started open-loop at fixed times (a late Put never delays the next), so the rate is
// the one asked for. Each Put's commit time is the wall clock when etcd's answer arrives. A
// deferred constraint trigger on `etcd`, installed in the bench database before the service starts,
// records clock_timestamp() per revision at the mirror's COMMIT, i.e. when the row becomes visible.
// Both clocks are this machine's CLOCK_REALTIME.

#include "perf/bench_env.hpp"
#include "perf/mirror_latency.hpp"
#include "test/support/server_programs.hpp"
#include "adapters/etcd_watch.hpp"
#include "reactor/loop/wakeup.hpp"

#include <cstdlib>
#include <fstream>
#include <map>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

// --- (a) ---------------------------------------------------------------------------------------

struct Saturation {
  bool stop = false;
  std::int64_t puts = 0;
  std::int64_t max_revision = 0;
  std::string value;
  std::exception_ptr failure;
  int running = 0;
  // --reference-watch: a plain Watch in the generator, to tell etcd's own watch delivery apart
  // from the mirror.
  std::unique_ptr<WatchStream> watch;
  std::int64_t watched_revision = 0;
  bool watch_done = false;
  // --etcdctl-watch: the JSON lines `etcdctl watch` writes.
  fs::path etcdctl_output;
};

struct SaturationFigures {
  double window_seconds = 0;
  std::int64_t puts = 0;
  std::int64_t revisions = 0;
  std::int64_t mirrored = 0;
  std::int64_t lag_at_end = 0;
  std::int64_t final_revision = 0;
  std::int64_t start_revision = 0;
  double drain_seconds = -1;
  std::string cpu;
  std::int64_t watched = -1;  // revisions the reference watch advanced over the window
  std::int64_t watch_lag_at_end = 0;
  std::int64_t etcdctl_watched = -1;  // the same for etcdctl's watch
  std::int64_t etcdctl_lag_at_end = 0;
};

/// The highest "mod_revision" among the last events `etcdctl watch -w json` wrote to `file` (it
/// writes one JSON object per watch response), or 0 when there is none yet. Reads the file's tail.
std::int64_t last_etcdctl_revision(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff tail = std::min<std::streamoff>(size, 256 * 1024);
  in.seekg(size - tail);
  std::string text(static_cast<std::size_t>(tail), '\0');
  in.read(text.data(), tail);
  std::int64_t highest = 0;
  const std::string field = "\"mod_revision\":";
  for (auto at = text.find(field); at != std::string::npos; at = text.find(field, at + 1))
    highest = std::max<std::int64_t>(highest, std::strtoll(text.c_str() + at + field.size(), nullptr, 10));
  return highest;
}

asio::awaitable<void> put_stream(EtcdClient& etcd, Saturation& state, int stream) {
  etcdserverpb::PutRequest request;
  request.set_value(state.value);
  const std::string base = "/bench/sat/" + std::to_string(stream) + "/";
  for (std::int64_t i = 0; !state.stop; ++i) {
    request.set_key(base + std::to_string(i % 100));
    auto response = co_await etcd.put(request);
    ++state.puts;
    state.max_revision = std::max(state.max_revision, response.header().revision());
  }
}

asio::awaitable<void> reference_watch(Saturation& state) {
  while (auto response = co_await state.watch->read())
    for (const auto& event : response->events())
      state.watched_revision = std::max(state.watched_revision, event.kv().mod_revision());
}

asio::awaitable<void> saturate(Loop& loop, PgConnection& pg, Saturation& state, const BenchOptions& options,
                               CpuShare& cpu, SaturationFigures& figures) {
  co_await pg.connect(5s);
  figures.start_revision = co_await etcd_revision(loop.etcd());
  Wakeup done(loop.io());
  if (options.reference_watch) {
    state.watch = loop.etcd().open_watch();
    const auto create = prefix_watch(bench_prefix, figures.start_revision + 1);
    co_await state.watch->start(create);
    asio::co_spawn(loop.io(), reference_watch(state), [&state, &done](std::exception_ptr) {
      state.watch_done = true;
      done.notify();
    });
  }
  for (int s = 0; s < options.streams; ++s) {
    ++state.running;
    asio::co_spawn(loop.io(), put_stream(loop.etcd(), state, s), [&state, &done](std::exception_ptr e) {
      if (e && !state.failure) state.failure = e;
      --state.running;
      done.notify();
    });
  }
  co_await sleep_for(std::chrono::milliseconds(static_cast<int>(options.warmup_seconds * 1000)));

  auto checkpoint_before = co_await mirror_checkpoint(pg);
  auto watched_before = state.watched_revision;
  auto etcdctl_before = state.etcdctl_output.empty() ? 0 : last_etcdctl_revision(state.etcdctl_output);  // coroutine-safe: int64 arms
  auto began = Clock::now();
  auto puts_before = state.puts;
  auto revision_before = state.max_revision;
  cpu.start();
  co_await sleep_until(began + std::chrono::milliseconds(static_cast<int>(options.saturation_seconds * 1000)));
  auto checkpoint_after = co_await mirror_checkpoint(pg);
  if (!state.etcdctl_output.empty()) {
    auto etcdctl_after = last_etcdctl_revision(state.etcdctl_output);
    figures.etcdctl_watched = etcdctl_after - etcdctl_before;
    figures.etcdctl_lag_at_end = std::max<std::int64_t>(0, state.max_revision - etcdctl_after);
  }
  if (state.watch) {
    figures.watched = state.watched_revision - watched_before;
    figures.watch_lag_at_end = std::max<std::int64_t>(0, state.max_revision - state.watched_revision);
  }
  figures.window_seconds = seconds_since(began);
  figures.puts = state.puts - puts_before;
  figures.revisions = state.max_revision - revision_before;
  figures.mirrored = checkpoint_after - checkpoint_before;
  figures.lag_at_end = std::max<std::int64_t>(0, state.max_revision - checkpoint_after);
  figures.cpu = cpu.stop();

  state.stop = true;
  while (state.running > 0) co_await done.wait(1s);
  if (state.failure) std::rethrow_exception(state.failure);
  figures.final_revision = state.max_revision;
  auto drain_began = Clock::now();
  while (seconds_since(drain_began) < 120) {
    if (co_await mirror_checkpoint(pg) >= figures.final_revision) {
      figures.drain_seconds = seconds_since(drain_began);
      break;
    }
    co_await sleep_for(10ms);
  }
  if (state.watch) {
    while (state.watched_revision < figures.final_revision && !state.watch_done && seconds_since(drain_began) < 120)
      co_await done.wait(100ms);
    state.watch->cancel();
    while (!state.watch_done) co_await done.wait(1s);
    co_await state.watch->finish();
  }
  pg.close();
}

// --- (b) ---------------------------------------------------------------------------------------

asio::awaitable<void> paced_run(Loop& loop, PgConnection& pg, PacedPuts& state, double rate, CpuShare& cpu) {
  co_await pg.connect(5s);
  cpu.start();
  co_await pace_puts(loop, state, rate);
  std::int64_t last = 0;
  for (const auto& p : state.puts) last = std::max(last, p.revision);
  co_await wait_checkpoint(pg, last, 60s);
  pg.close();
}

}  // namespace

Outcome run_saturation(const BenchOptions& options) {
  std::printf("== (a) etcd -> PostgreSQL saturation: %d Put streams as fast as etcd accepts, %.0f s window ==\n",
              options.streams, options.saturation_seconds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "saturation", settings, options);
  env.start_service();
  detail("servers: " + env.versions());

  Loop loop(env.etcd_endpoint());
  PgConnection pg(loop.io(), env.conninfo(), "bench");
  Saturation state;
  state.value.assign(options.value_bytes, 'v');
  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  SaturationFigures f;
  testing::ChildProcess etcdctl;
  if (options.etcdctl_watch) {
    state.etcdctl_output = options.out_dir / "saturation" / "etcdctl-watch.jsonl";
    fs::remove(state.etcdctl_output);
    testing::SpawnSpec spec;
    spec.program = testing::etcdctl_program();
    spec.args = {"--endpoints", env.etcd_endpoint(), "watch", "--prefix", bench_prefix, "-w", "json"};
    spec.env = {{"ETCDCTL_API", "3"}};
    spec.output_path = state.etcdctl_output;
    etcdctl.start(spec);
  }
  loop.run(saturate(loop, pg, state, options, cpu, f));
  if (options.etcdctl_watch) etcdctl.stop(SIGTERM, 2s);

  double accepted = f.puts / f.window_seconds;
  double mirrored = f.mirrored / f.window_seconds;
  double ratio = accepted > 0 ? mirrored / accepted : 0;
  auto rows = std::stoll(env.env.db().scalar("SELECT count(*) FROM etcd").value_or("0"));
  detail(format("window %.2f s after %.0f s warm-up: %lld puts accepted (%lld revisions), mirror checkpoint moved %lld",
                f.window_seconds, options.warmup_seconds, static_cast<long long>(f.puts),
                static_cast<long long>(f.revisions), static_cast<long long>(f.mirrored)));
  detail(format("lag at the end of the window: %lld revisions; after the generator stopped the mirror caught up in %.2f s",
                static_cast<long long>(f.lag_at_end), f.drain_seconds));
  if (f.watched >= 0)
    detail(format("reference watch in the generator (same prefix, a second watcher on etcd): %.0f revisions/s, "
                  "ratio %.3f, lag at the end of the window %lld",
                  f.watched / f.window_seconds, f.revisions > 0 ? static_cast<double>(f.watched) / f.revisions : 0.0,
                  static_cast<long long>(f.watch_lag_at_end)));
  if (f.etcdctl_watched >= 0)
    detail(format("etcdctl watch (etcd's Go client, a second watcher on etcd): %.0f revisions/s, ratio %.3f, "
                  "lag at the end of the window %lld",
                  f.etcdctl_watched / f.window_seconds,
                  f.revisions > 0 ? static_cast<double>(f.etcdctl_watched) / f.revisions : 0.0,
                  static_cast<long long>(f.etcdctl_lag_at_end)));
  detail(format("rows in etcd table: %lld for %lld revisions since start (%s)", rows,
                static_cast<long long>(f.final_revision - f.start_revision),
                rows == f.final_revision - f.start_revision ? "every revision mirrored once" : "MISMATCH"));
  detail(f.cpu);
  detail("load average after: " + load_average());
  env.stop_service();
  bool met = ratio >= 0.9;
  return {"a saturation",
          format("etcd accepted %.0f puts/s, mirror applied %.0f rows/s, ratio %.3f (target >= 0.9: %s)", accepted,
                 mirrored, ratio, met ? "met" : "MISSED"),
          met};
}

Outcome run_mirror_latency(const BenchOptions& options) {
  std::printf("== (b) etcd -> PostgreSQL latency at %.0f puts/s for %.0f s ==\n", options.rate,
              options.latency_seconds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "mirror-latency", settings, options);
  env.migrate();
  install_seen_trigger(env.env.db());
  env.start_service();
  detail("servers: " + env.versions());

  Loop loop(env.etcd_endpoint());
  PgConnection pg(loop.io(), env.conninfo(), "bench");
  PacedPuts state;
  state.value.assign(options.value_bytes, 'v');
  state.limit = static_cast<std::size_t>(options.rate * options.latency_seconds);
  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  auto began = Clock::now();
  loop.run(paced_run(loop, pg, state, options.rate, cpu));
  auto cpu_line = cpu.stop();
  double elapsed = seconds_since(began);

  auto m = mirror_latency(state.puts, read_seen(env.env.db()));
  const auto& d = m.visible_ms;
  const auto missing = m.missing;
  const auto achieved = m.achieved_rate;
  detail(format("%zu puts in %.2f s of sending: %.0f puts/s achieved; run incl. drain %.2f s; %zu revisions not seen in PostgreSQL",
                m.puts, m.sending_seconds, achieved, elapsed, missing));
  print_mirror_latency(m);
  detail(cpu_line);
  detail("load average after: " + load_average());
  env.stop_service();
  bool met = missing == 0 && d.p99 < 10.0;
  return {"b mirror-latency",
          format("at %.0f puts/s, commit -> row visible p50 %.2f ms, p99 %.2f ms, max %.2f ms (target p99 < 10 ms: %s)",
                 achieved, d.p50, d.p99, d.max, met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
