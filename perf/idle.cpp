// (e) An idle etcd-sync: no traffic at all, after it has settled. CPU is utime + stime from
// /proc/PID/stat before and after the window, as a share of one core; wakeups (context switches)
// and the transactions it makes PostgreSQL run are reported beside it.

#include "perf/bench_env.hpp"

#include <thread>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

struct IdleSample {
  double cpu = 0;
  std::int64_t voluntary = 0;
  std::int64_t involuntary = 0;
  std::int64_t commits = 0;
};

IdleSample idle_sample(BenchEnv& env, const std::string& database) {
  IdleSample s;
  s.cpu = cpu_seconds(env.service_pid());
  s.voluntary = threads_status_sum(env.service_pid(), "voluntary_ctxt_switches");
  s.involuntary = threads_status_sum(env.service_pid(), "nonvoluntary_ctxt_switches");
  s.commits = std::stoll(env.env.db()
                             .exec_params("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", {database})[0][0]
                             .value_or("0"));
  return s;
}

}  // namespace

Outcome run_idle(const BenchOptions& options) {
  std::printf("== (e) idle etcd-sync: CPU over %.0f s with no traffic ==\n", options.idle_seconds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "idle", settings, options);
  env.start_service();
  detail("servers: " + env.versions() + "; sync_interval " + settings.sync_interval + ", direction " + settings.direction);
  auto database = env.env.db().scalar("SELECT current_database()").value_or("");
  std::this_thread::sleep_for(5s);  // let startup (migrations, snapshot, first sweep) pass

  CpuShare cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  auto before = idle_sample(env, database);
  cpu.start();
  auto began = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(options.idle_seconds * 1000)));
  double seconds = seconds_since(began);
  auto after = idle_sample(env, database);
  auto cpu_line = cpu.stop();
  double percent = 100.0 * (after.cpu - before.cpu) / seconds;
  detail(format("etcd-sync used %.2f s of CPU in %.1f s; %.1f voluntary and %.1f involuntary context switches/s (all threads); "
                "%lld threads; VmRSS %.1f MiB",
                after.cpu - before.cpu, seconds, (after.voluntary - before.voluntary) / seconds,
                (after.involuntary - before.involuntary) / seconds,
                static_cast<long long>(status_number(env.service_pid(), "Threads")),
                status_kib(env.service_pid(), "VmRSS") / 1024.0));
  detail(format("PostgreSQL transactions committed in the bench database: %.2f/s (heartbeat, sweeps, and our 2 probes)",
                (after.commits - before.commits) / seconds));
  detail(cpu_line);
  detail("load average after: " + load_average());
  env.stop_service();
  bool met = percent < 1.0;
  return {"e idle",
          format("etcd-sync used %.3f%% of one core over %.0f s idle (target < 1%%: %s)", percent, seconds,
                 met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
