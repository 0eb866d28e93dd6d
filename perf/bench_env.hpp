// What every benchmark scenario shares: throwaway etcd and PostgreSQL servers with the etcd-sync
// binary under test (from test_support), an asynchronous load generator on the project's own
// adapters, and the measurements (percentiles, CPU and memory of processes from /proc).
//
// The generator runs on one io_context thread (plus the gRPC bridge thread), like etcd-sync itself,
// so that on a 2-core machine it takes as little CPU from the servers as it can.
#pragma once

#include "adapters/etcd_client.hpp"
#include "adapters/grpc_bridge.hpp"
#include "adapters/pg_connection.hpp"
#include "test/support/run_coroutine.hpp"
#include "test/support/sync_fixture.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace etcd_sync::bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::SyncSettings;

/// Wall-clock microseconds since the epoch: the same clock as PostgreSQL's clock_timestamp() on
/// this machine, so a client timestamp and a server timestamp can be subtracted.
std::int64_t wall_micros();

/// Seconds since `start` on the steady clock.
double seconds_since(Clock::time_point start);

/// Order statistics of a sample, in the sample's unit. Nearest-rank percentiles.
struct Distribution {
  std::size_t count = 0;
  double min = 0, p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};
Distribution distribution(std::vector<double> samples);
/// "p50 1.23 ms, p99 4.56 ms, max 7.89 ms (n=10000)".
std::string describe_ms(const Distribution& d);

/// user+system CPU seconds a process has used, from /proc/PID/stat; 0 when it is gone.
double cpu_seconds(pid_t pid);
/// CPU seconds of a process plus all its live descendants (the postmaster and its backends); with
/// `reaped`, also what descendants that ended took, once a process of the tree reaped them (cutime
/// + cstime), so a backend that exits inside a window keeps its time in the difference.
double tree_cpu_seconds(pid_t root, bool reaped = false);
/// A field of /proc/PID/status in kB (VmHWM, VmRSS), or -1 when it cannot be read.
std::int64_t status_kib(pid_t pid, const std::string& field);
/// A number from /proc/PID/status (voluntary_ctxt_switches, Threads), or -1.
std::int64_t status_number(pid_t pid, const std::string& field);
/// A number from /proc/PID/task/*/status summed over the process's threads.
std::int64_t threads_status_sum(pid_t pid, const std::string& field);
/// "/proc/loadavg" without the trailing fields: "1.23 0.98 0.75".
std::string load_average();

/// A Watch of every key under `prefix` (etcd's prefix range_end) from `start_revision` on.
etcdserverpb::WatchCreateRequest prefix_watch(const std::string& prefix, std::int64_t start_revision);
/// Seconds all cores were busy since boot (/proc/stat "cpu": everything but idle and iowait), and
/// of those the steal: time the hypervisor gave this virtual machine's cores to someone else.
std::pair<double, double> machine_busy_and_steal_seconds();
/// Seconds some task waited on `resource` ("io", "cpu") since boot (/proc/pressure/<resource>,
/// "some ... total="); 0 when the kernel has no pressure stall information.
double pressure_seconds(const std::string& resource);

/// The CPU the whole benchmark (this process and everything it started, alive or already reaped:
/// servers, etcd-sync instances, etcdctl) took over a window, what other processes on the machine
/// took meanwhile, and the io pressure. For scenarios whose processes come and go (a killed etcd
/// member, a restarted instance), where CpuShare's per-process figures would not add up.
class MachineShare {
 public:
  void start();
  /// "load average 0.52 0.61 0.70; this benchmark 85% of one core, other processes 4% (of which
  /// steal 1%), io pressure 0.2% of the window".
  std::string stop() const;

 private:
  std::vector<double> sample() const;
  Clock::time_point began_;
  std::vector<double> at_start_;
};

/// How the CPU was shared between processes over a window: percent of one core each, the
/// generator's (this process), and what the rest of the machine took meanwhile.
class CpuShare {
 public:
  /// One process to measure, named in the line. With `tree`, its children count too, those it has
  /// reaped included: PostgreSQL's postmaster, so a backend that ends inside the window stays counted.
  struct Process {
    std::string name;
    pid_t pid = 0;  ///< 0: not running (counts 0%)
    bool tree = false;
  };
  explicit CpuShare(std::vector<Process> processes);
  /// The usual three, in this order: etcd, PostgreSQL and etcd-sync (0 where the window has none).
  CpuShare(pid_t etcd_sync, pid_t etcd, pid_t postmaster);
  void start();
  /// "CPU over the window (% of one core): etcd 95%, postgres 60%, etcd-sync 20%, generator 35%
  /// (sum 210% of 200%); other processes 5% (of which steal 2%); io pressure 0.3% of the window".
  std::string stop();
  /// Percent of one core of the `i`th process (in the order given) over the last window.
  double percent(std::size_t i) const { return percent_.at(i); }
  /// etcd-sync's percent, for the three-pid form.
  double etcd_sync_percent() const { return percent(2); }

 private:
  std::vector<double> sample() const;
  std::vector<Process> processes_;
  Clock::time_point began_;
  std::vector<double> at_start_;
  std::vector<double> percent_;  ///< per process, then the generator
};

/// The generator's reactor: an io_context, the gRPC bridge and an EtcdClient on it. Not
/// thread-safe; everything runs on the thread that calls run().
class Loop : public testing::EtcdLoop {
 public:
  explicit Loop(const std::string& etcd_endpoint) : EtcdLoop(etcd_endpoint, std::chrono::seconds(30)) {}
};

/// Sleeps on the loop until `until` (a steady_clock deadline).
asio::awaitable<void> sleep_until(Clock::time_point until);
/// Sleeps on the loop for `duration`.
asio::awaitable<void> sleep_for(std::chrono::microseconds duration);

/// The service's [etcd] prefix in every scenario; every key the generator writes is under it.
inline const std::string bench_prefix = "/bench/";

/// etcd's current revision (Maintenance.Status).
asio::awaitable<std::int64_t> etcd_revision(EtcdClient& etcd);
/// The mirror's checkpoint for bench_prefix, or -1 when none yet.
asio::awaitable<std::int64_t> mirror_checkpoint(PgConnection& pg);

/// The etcd-sync process under test: any binary (--service-binary compares builds), stdout and
/// stderr appended to a log file, killed if the generator dies.
class ServiceUnderTest {
 public:
  ServiceUnderTest(fs::path binary, fs::path log_path);
  void start(const std::vector<std::string>& args);
  /// Waits until `needle` appears in the log written since start(); false at the deadline or when
  /// the process exited without writing it.
  bool wait_for_log(const std::string& needle, std::chrono::milliseconds deadline);
  std::string log_text() const { return testing::read_text_file(log_path_); }
  bool running() { return process_.running(); }
  pid_t pid() const { return process_.pid(); }
  int terminate() { return process_.stop(SIGTERM, std::chrono::seconds(10)); }
  /// Sends `sig` (SIGTERM, SIGSTOP, SIGCONT) if the process runs.
  void signal(int sig) { process_.signal(sig); }
  /// SIGKILL and reap.
  void kill9() { process_.stop(SIGKILL, std::chrono::seconds(5)); }
  /// Waits up to `deadline` for the process to exit; its exit code, or nullopt while it runs.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline) { return process_.wait_exit(deadline); }
  /// Moves the mark to the end of the log: wait_for_log() and log_since_mark() see newer lines only.
  void mark_log();
  /// The log written since the mark (start() or mark_log()).
  std::string log_since_mark() const { return testing::read_text_file(log_path_, mark_); }
  const fs::path& log_path() const { return log_path_; }
  const fs::path& binary() const { return binary_; }

 private:
  fs::path binary_;
  fs::path log_path_;
  std::uintmax_t mark_ = 0;
  testing::ChildProcess process_;
};

/// Servers, a database and etcd-sync for one scenario. The service's log (JSON, level info by
/// default) is written to `<out_dir>/etcd-sync.log`; the servers' logs are copied there at the end.
class BenchEnv {
 public:
  /// `options.pg_settings` ("name=value") are applied with ALTER SYSTEM + pg_reload_conf() before
  /// anything else, e.g. log_min_duration_statement=0 while profiling.
  BenchEnv(const fs::path& out_dir, SyncSettings settings, const struct BenchOptions& options);
  ~BenchEnv();

  /// The settings every scenario starts from: the defaults (README.md, "Configuration"), JSON
  /// logs, and the options' batch_size and log level.
  static SyncSettings default_settings(const struct BenchOptions& options);

  /// Writes a configuration for `settings` named `name` in the servers' temp dir with etcd's
  /// `endpoints` (empty: the scenario's single etcd) and `extra_toml` appended (an [ha] table), and
  /// copies it to the scenario's output dir; returns its path.
  fs::path write_config(const SyncSettings& settings, const std::string& name, const std::vector<std::string>& endpoints,
                        const std::string& extra_toml = "");
  /// From now on start_service() and spawn_service() use `config`.
  void use_config(const fs::path& config) { config_ = config; }

  /// Runs `etcd-sync migrate` so that the tables exist before the service starts.
  void migrate();
  /// Starts etcd-sync and waits until it is up (and, with the mirror on, watching).
  void start_service();
  /// Starts etcd-sync without waiting for anything.
  void spawn_service();
  /// SIGTERM and wait; returns the exit code.
  int stop_service() { return service.terminate(); }

  std::string conninfo() const { return env.conninfo(); }
  std::string etcd_endpoint() const { return env.etcd.endpoint(); }
  pid_t service_pid() const { return service.pid(); }
  const fs::path& config_path() const { return config_; }
  const SyncSettings& settings() const { return settings_; }
  /// "etcd 3.4.23, PostgreSQL 15.x; etcd-sync <binary>": what the scenario ran against.
  std::string versions();

  testing::SyncEnvironment env;
  ServiceUnderTest service;

 private:
  fs::path out_dir_;
  SyncSettings settings_;
  fs::path config_;
};

/// One scenario's headline: the single line printed as "RESULT <name>: <line>".
struct Outcome {
  std::string name;
  std::string line;
  bool met = false;  ///< every target of the scenario was met
};

/// Command-line knobs of the scenarios (defaults keep each one within a couple of minutes).
struct BenchOptions {
  fs::path out_dir = "bench-out";
  int batch_size = 100;
  std::string log_level = "info";         ///< the service's [logging] level
  std::vector<std::string> pg_settings;   ///< "name=value", applied to PostgreSQL before the service starts
  fs::path service_binary;                ///< empty: the etcd-sync built with this benchmark
  // (a) saturation
  int streams = 256;
  double saturation_seconds = 10;
  double warmup_seconds = 2;
  bool reference_watch = false;  ///< also watch the prefix from the generator (a diagnostic)
  bool etcdctl_watch = false;    ///< also watch the prefix with etcdctl, a Go client (a diagnostic)
  // (b) and (c) latency at a fixed rate
  double rate = 1000;
  double latency_seconds = 10;
  int inserters = 8;
  // (c) throughput
  int wal_rows = 20000;
  int wal_history = 0;  ///< (c) settled etcd_wal rows written and analyzed before the burst
  // (d) snapshot
  int snapshot_keys = 1000000;
  int value_bytes = 100;
  double load_budget_seconds = 120;
  int load_concurrency = 16;
  // (e) idle
  double idle_seconds = 60;
  // (f) catch-up
  int catchup_events = 256000;  ///< puts written to etcd while etcd-sync is stopped
  // (g) pruning
  int prune_rows = 2000000;     ///< history rows in `etcd` before etcd-sync starts (10 versions per key)
  // (h) failover and (i) takeover: a steady load on both sides
  double load_rate = 200;     ///< etcd_wal rows/s (each its own transaction) and etcd puts/s
  int rounds = 3;             ///< (h) kills of etcd's leader while etcd-sync works on that member
  int follower_rounds = 1;    ///< (h) then kills of etcd's leader while etcd-sync works on a follower
  std::vector<int> ttls = {10, 2};  ///< (i) [ha] ttl in seconds, one pass of the three faults each
};

Outcome run_saturation(const BenchOptions& options);      // (a)
Outcome run_mirror_latency(const BenchOptions& options);  // (b)
Outcome run_outbox(const BenchOptions& options);          // (c)
Outcome run_snapshot(const BenchOptions& options);        // (d)
Outcome run_idle(const BenchOptions& options);            // (e)
Outcome run_catch_up(const BenchOptions& options);        // (f)
Outcome run_pruning(const BenchOptions& options);         // (g)
Outcome run_failover(const BenchOptions& options);        // (h)
Outcome run_takeover(const BenchOptions& options);        // (i)
Outcome run_logging(const BenchOptions& options);         // (j)
Outcome run_two_prefix(const BenchOptions& options);      // (k)
Outcome run_prune_mechanism(const BenchOptions& options); // (l)

/// printf-style formatting into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/// Prints a detail line ("  ...") and flushes.
void detail(const std::string& text);

}  // namespace etcd_sync::bench
