// (d) The first snapshot of a large keyspace: etcd is loaded first (Txns of 128 puts, etcd 3.4's
// default --max-txn-ops, several in flight), then etcd-sync starts on an empty database and we time
// until its checkpoint reaches etcd's revision. Peak RSS is the service's VmHWM at that moment.
// The reference, in the same run with etcd-sync stopped, each measured alone: etcd's Range read of
// the whole prefix at one revision, paged by bytes as the snapshot pages it, and one COPY of the
// same rows (key, value and the metadata the mirror writes) into a twin of `etcd`. The slower of
// the two bounds what any snapshot could do on this machine.

#include "perf/bench_env.hpp"
#include "perf/etcd_load.hpp"

#include <thread>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

std::string snapshot_key(int i) { return format("/bench/snap/%07d", i); }

asio::awaitable<etcdserverpb::StatusResponse> etcd_status(EtcdClient& etcd) { co_return co_await etcd.status(); }

}  // namespace

Outcome run_snapshot(const BenchOptions& options) {
  std::printf("== (d) snapshot of %d keys with %d-byte values ==\n", options.snapshot_keys, options.value_bytes);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  settings.direction = "etcd_to_postgres";
  BenchEnv env(options.out_dir / "snapshot", settings, options);
  detail("servers: " + env.versions());

  TxnLoad load;
  load.total = options.snapshot_keys;
  load.key = snapshot_key;
  load.value.assign(options.value_bytes, 'v');
  load.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int>(options.load_budget_seconds * 1000));
  etcdserverpb::StatusResponse status;
  {
    Loop loop(env.etcd_endpoint());
    auto began = Clock::now();
    loop.run(load_etcd(loop, load, options.load_concurrency));
    double seconds = seconds_since(began);
    status = loop.run(etcd_status(loop.etcd()));
    detail(format("loaded %lld keys into etcd in %.1f s (%.0f keys/s, Txn of %d puts, %d in flight); etcd db %.0f MiB, "
                  "revision %lld",
                  static_cast<long long>(load.loaded), seconds, load.loaded / seconds, puts_per_txn,
                  options.load_concurrency, status.dbsize() / 1048576.0,
                  static_cast<long long>(status.header().revision())));
    if (load.loaded < load.total)
      detail(format("NOTE: the load budget of %.0f s ran out; the snapshot below is of %lld keys, not %d",
                    options.load_budget_seconds, static_cast<long long>(load.loaded), load.total));
  }
  const auto revision = status.header().revision();

  auto began = Clock::now();
  env.spawn_service();
  CpuShare service_cpu(env.service_pid(), env.env.etcd.pid(), env.env.postgres.pid());
  service_cpu.start();
  std::int64_t rss_max = 0;
  bool done = false;
  while (seconds_since(began) < 600) {
    if (!env.service.running()) throw std::runtime_error("etcd-sync exited during the snapshot:\n" + env.service.log_text());
    rss_max = std::max(rss_max, status_kib(env.service_pid(), "VmRSS"));
    if (env.env.checkpoint(bench_prefix) >= revision) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  double seconds = seconds_since(began);
  auto peak_kib = status_kib(env.service_pid(), "VmHWM");
  auto cpu_line = service_cpu.stop();
  auto rows = env.env.db().scalar("SELECT count(*) FROM etcd").value_or("?");
  auto log = env.service.log_text();
  auto snapshot_line = log.substr(log.find("snapshot applied") == std::string::npos ? log.size() : log.rfind('\n', log.find("snapshot applied")) + 1);
  snapshot_line = snapshot_line.substr(0, snapshot_line.find('\n'));
  detail(format("etcd-sync start -> checkpoint at revision %lld: %.1f s (%.0f keys/s); rows in etcd table: %s",
                static_cast<long long>(revision), seconds, load.loaded / seconds, rows.c_str()));
  detail(format("etcd-sync peak RSS (VmHWM) %.1f MiB = %.1f MB; largest VmRSS sampled %.1f MiB",
                peak_kib / 1024.0, peak_kib * 1024 / 1e6, rss_max / 1024.0));
  detail(cpu_line);
  if (!snapshot_line.empty()) detail("log: " + snapshot_line);
  env.stop_service();

  // The reference: etcd's Range read alone, then PostgreSQL's COPY alone, etcd-sync stopped.
  Loop loop(env.etcd_endpoint());
  RangeFigures range;
  CpuShare range_cpu(0, env.env.etcd.pid(), env.env.postgres.pid());
  range_cpu.start();
  loop.run(range_read(loop.etcd(), bench_prefix, range));
  const auto range_cpu_line = range_cpu.stop();
  const double range_rate = range.keys / range.seconds;
  detail(format("reference: etcd Range of the prefix at revision %lld: %lld keys (%.0f MiB of keys and values) in %lld "
                "pages sized by bytes, %.2f s, %.0f keys/s",
                static_cast<long long>(range.revision), static_cast<long long>(range.keys), range.bytes / 1048576.0,
                static_cast<long long>(range.pages), range.seconds, range_rate));
  detail("during the Range read: " + range_cpu_line);
  const auto copy = time_twin_copy(loop, env, load, 0);
  const double copy_rate = copy.rows / copy.seconds;
  const double reference = std::min(range_rate, copy_rate);
  const double snapshot_rate = load.loaded / seconds;
  const double ratio = reference > 0 ? snapshot_rate / reference : 0;

  // `validate` walks the same keys in both stores (etcd pages sized by bytes, as the snapshot's).
  auto validate_began = Clock::now();
  auto validated = testing::run_command(env.service.binary(), {"validate", "-c", env.config_path().string()}, {},
                                        std::chrono::minutes(10));
  auto summary = validated.stdout_text.substr(validated.stdout_text.rfind('\n', validated.stdout_text.size() - 2) + 1);
  detail(format("etcd-sync validate over the %lld keys: %.1f s, exit %d: %s", static_cast<long long>(load.loaded),
                seconds_since(validate_began), validated.exit_code,
                summary.substr(0, summary.find('\n')).c_str()));
  detail("load average after: " + load_average());
  bool full = load.loaded == load.total;
  bool met = done && full && range.keys == load.loaded && copy.rows == load.loaded && seconds < 60 &&
             peak_kib * 1024 < 150'000'000 && ratio >= 0.8;
  return {"d snapshot",
          format("%lld keys in %.1f s, %.0f keys/s, reference %.0f keys/s (etcd Range %.0f/s, COPY %.0f/s), ratio %.3f "
                 "(target >= 0.8), peak RSS %.1f MiB (targets < 60 s, < 150 MB%s): %s",
                 static_cast<long long>(load.loaded), seconds, snapshot_rate, reference, range_rate, copy_rate, ratio,
                 peak_kib / 1024.0, full ? "" : "; NOT the full key count", met ? "met" : "MISSED"),
          met};
}

}  // namespace etcd_sync::bench
