#include "perf/bench_env.hpp"

#include "reactor/keys/keys.hpp"
#include "test/support/server_programs.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

namespace etcd_sync::bench {

std::int64_t wall_micros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Distribution distribution(std::vector<double> samples) {
  Distribution d;
  if (samples.empty()) return d;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double q) {
    // Nearest rank: the smallest sample with at least q of the sample at or below it.
    auto index = static_cast<std::size_t>(std::ceil(q * samples.size()));
    return samples[std::clamp<std::size_t>(index, 1, samples.size()) - 1];
  };
  d.count = samples.size();
  d.min = samples.front();
  d.max = samples.back();
  d.p50 = rank(0.50);
  d.p90 = rank(0.90);
  d.p99 = rank(0.99);
  d.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  return d;
}

std::string describe_ms(const Distribution& d) {
  return format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, min %.2f ms, mean %.2f ms (n=%zu)", d.p50,
                d.p90, d.p99, d.max, d.min, d.mean, d.count);
}

namespace {

/// The fields of /proc/PID/stat after the command name, so that index 0 is field 3 ("state").
std::vector<std::string> stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  std::vector<std::string> fields;
  if (close == std::string::npos) return fields;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  while (rest >> field) fields.push_back(field);
  return fields;
}

double ticks_to_seconds(const std::vector<std::string>& fields) {
  if (fields.size() < 13) return 0;
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(fields[11]) + std::stod(fields[12])) / ticks;  // utime (14), stime (15)
}

/// CPU seconds of `root` and every live process below it: utime + stime of each, and with
/// `reaped_children` also the cutime + cstime of children each has reaped (fields 14-17 of
/// /proc/PID/stat).
double tree_seconds(pid_t root, bool reaped_children) {
  if (root <= 0) return 0;
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  std::map<pid_t, std::pair<pid_t, double>> processes;  // pid -> (parent, cpu seconds)
  if (DIR* proc = opendir("/proc")) {
    while (dirent* entry = readdir(proc)) {
      char* end = nullptr;
      long pid = std::strtol(entry->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      auto fields = stat_fields(static_cast<pid_t>(pid));
      if (fields.size() < 15) continue;
      double seconds = 0;
      for (int i = 11; i <= (reaped_children ? 14 : 12); ++i) seconds += std::stod(fields[i]);
      processes[static_cast<pid_t>(pid)] = {static_cast<pid_t>(std::stol(fields[1])), seconds / ticks};
    }
    closedir(proc);
  }
  double total = 0;
  for (const auto& [pid, info] : processes) {
    for (pid_t p = pid; p > 1;) {
      if (p == root) {
        total += info.second;
        break;
      }
      auto it = processes.find(p);
      if (it == processes.end()) break;
      p = it->second.first;
    }
  }
  return total;
}

}  // namespace

double cpu_seconds(pid_t pid) { return pid > 0 ? ticks_to_seconds(stat_fields(pid)) : 0; }

double tree_cpu_seconds(pid_t root, bool reaped) { return tree_seconds(root, reaped); }

std::int64_t status_number(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

std::int64_t status_kib(pid_t pid, const std::string& field) { return status_number(pid, field); }

std::int64_t threads_status_sum(pid_t pid, const std::string& field) {
  std::int64_t total = 0;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(field + ":", 0) == 0) total += std::stoll(line.substr(field.size() + 1));
  }
  return total;
}

etcdserverpb::WatchCreateRequest prefix_watch(const std::string& prefix, std::int64_t start_revision) {
  auto range = prefix_range(prefix);
  etcdserverpb::WatchCreateRequest create;
  create.set_key(range.key);
  create.set_range_end(range.range_end);
  create.set_start_revision(start_revision);
  return create;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::pair<double, double> machine_busy_and_steal_seconds() {
  std::ifstream in("/proc/stat");
  std::string label;
  in >> label;
  double total = 0, steal = 0, value = 0;
  for (int field = 0; field < 8 && in >> value; ++field) {
    if (field != 3 && field != 4) total += value;  // 3 idle, 4 iowait
    if (field == 7) steal = value;
  }
  const auto tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  return {total / tick, steal / tick};
}

double pressure_seconds(const std::string& resource) {
  std::ifstream in("/proc/pressure/" + resource);
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find("total=");
    if (line.rfind("some", 0) == 0 && at != std::string::npos) return std::stod(line.substr(at + 6)) / 1e6;
  }
  return 0;
}

std::vector<double> MachineShare::sample() const {
  // Every live process of the tree rooted here, each with its own time and the time of its children
  // it has reaped (cutime, cstime: fields 16 and 17 of /proc/PID/stat). A process that exits moves
  // its whole time into its parent's cutime when reaped, so killed members, stopped instances and
  // PostgreSQL backends that ended stay counted.
  const double ours = tree_seconds(getpid(), true);
  auto [busy, steal] = machine_busy_and_steal_seconds();
  return {ours, busy, steal, pressure_seconds("io")};
}

void MachineShare::start() {
  at_start_ = sample();
  began_ = Clock::now();
}

std::string MachineShare::stop() const {
  auto now = sample();
  double elapsed = seconds_since(began_);
  auto percent = [&](std::size_t i) { return elapsed > 0 ? 100.0 * (now[i] - at_start_[i]) / elapsed : 0.0; };
  double ours = percent(0);
  return format("load average %s; this benchmark %.0f%% of one core, other processes %.0f%% (of which steal %.0f%%), "
                "io pressure %.1f%% of the window",
                load_average().c_str(), ours, std::max(0.0, percent(1) - ours), percent(2), percent(3));
}

CpuShare::CpuShare(std::vector<Process> processes) : processes_(std::move(processes)) {}

CpuShare::CpuShare(pid_t etcd_sync, pid_t etcd, pid_t postmaster)
    : CpuShare({{"etcd", etcd}, {"postgres", postmaster, true}, {"etcd-sync", etcd_sync}}) {}

std::vector<double> CpuShare::sample() const {
  std::vector<double> out;
  for (const auto& p : processes_) out.push_back(p.tree ? tree_cpu_seconds(p.pid, true) : cpu_seconds(p.pid));
  out.push_back(cpu_seconds(getpid()));
  auto [busy, steal] = machine_busy_and_steal_seconds();
  out.push_back(busy);
  out.push_back(steal);
  out.push_back(pressure_seconds("io"));
  return out;
}

void CpuShare::start() {
  at_start_ = sample();
  began_ = Clock::now();
}

std::string CpuShare::stop() {
  const auto now = sample();
  const double elapsed = seconds_since(began_);
  auto share = [&](std::size_t i) { return elapsed > 0 ? 100.0 * (now[i] - at_start_[i]) / elapsed : 0.0; };
  std::string line = "CPU over the window (% of one core):";
  percent_.clear();
  double sum = 0;
  for (std::size_t i = 0; i <= processes_.size(); ++i) {
    percent_.push_back(share(i));
    sum += percent_.back();
    line += format(" %s %.0f%%,", i < processes_.size() ? processes_[i].name.c_str() : "generator", percent_.back());
  }
  line.pop_back();  // the last comma
  const auto n = processes_.size() + 1;
  // The machine is shared: what other processes took (and the hypervisor stole), and how long tasks
  // waited on the disk, say how far the figures above can be trusted.
  return line + format(" (sum %.0f%% of %ld%%); other processes %.0f%% (of which steal %.0f%%); io pressure %.1f%% of "
                       "the window",
                       sum, 100 * sysconf(_SC_NPROCESSORS_ONLN), std::max(0.0, share(n) - sum), share(n + 1),
                       share(n + 2));
}

asio::awaitable<void> sleep_until(Clock::time_point until) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_at(until);
  co_await timer.async_wait(asio::use_awaitable);
}

asio::awaitable<void> sleep_for(std::chrono::microseconds duration) {
  co_await sleep_until(Clock::now() + duration);
}

asio::awaitable<std::int64_t> etcd_revision(EtcdClient& etcd) {
  co_return (co_await etcd.status()).header().revision();
}

asio::awaitable<std::int64_t> mirror_checkpoint(PgConnection& pg) {
  auto result = co_await pg.query("SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1",
                                  pg_params(PgParam::text(bench_prefix)));
  co_return result.rows() == 0 ? -1 : result.int64(0, 0);  // coroutine-safe: int64 arms
}

ServiceUnderTest::ServiceUnderTest(fs::path binary, fs::path log_path)
    : binary_(std::move(binary)), log_path_(std::move(log_path)) {
  fs::create_directories(log_path_.parent_path());
  fs::remove(log_path_);
}

void ServiceUnderTest::start(const std::vector<std::string>& args) {
  std::error_code ec;
  auto size = fs::file_size(log_path_, ec);
  mark_ = ec ? 0 : size;
  testing::SpawnSpec spec;
  spec.program = binary_;
  spec.args = args;
  spec.output_path = log_path_;
  spec.death_signal = SIGKILL;
  process_.start(spec);
}

void ServiceUnderTest::mark_log() {
  std::error_code ec;
  auto size = fs::file_size(log_path_, ec);
  mark_ = ec ? 0 : size;
}

bool ServiceUnderTest::wait_for_log(const std::string& needle, std::chrono::milliseconds deadline) {
  bool found = false;
  testing::wait_until(
      [&] {
        bool alive = process_.running();  // first: a process that has exited wrote its last line
        found = testing::read_text_file(log_path_, mark_).find(needle) != std::string::npos;
        return found || !alive;
      },
      deadline);
  return found;
}

BenchEnv::BenchEnv(const fs::path& out_dir, SyncSettings settings, const BenchOptions& options)
    : service(options.service_binary.empty() ? testing::service_binary() : fs::absolute(options.service_binary),
              out_dir / "etcd-sync.log"),
      out_dir_(out_dir),
      settings_(std::move(settings)) {
  if (!options.pg_settings.empty()) {
    testing::PgClient admin(env.postgres.conninfo("postgres"));
    for (const auto& setting : options.pg_settings) {
      auto eq = setting.find('=');
      if (eq == std::string::npos) throw std::runtime_error("--pg-setting wants name=value, not " + setting);
      // A module's setting (auto_explain.log_min_duration) is only known once the module is loaded.
      auto dot = setting.find('.');
      if (dot < eq) admin.exec("LOAD '" + setting.substr(0, dot) + "'");
      admin.exec("ALTER SYSTEM SET " + setting.substr(0, eq) + " = '" + setting.substr(eq + 1) + "'");
    }
    admin.exec("SELECT pg_reload_conf()");
  }
  env.fresh_database();
  config_ = env.write_config(settings_);
  fs::copy_file(config_, out_dir_ / "etcd-sync.toml", fs::copy_options::overwrite_existing);
}

BenchEnv::~BenchEnv() {
  if (service.running()) service.terminate();
  std::error_code ec;
  fs::copy_file(env.etcd.log_path(), out_dir_ / "etcd.log", fs::copy_options::overwrite_existing, ec);
  fs::copy_file(env.postgres.log_path(), out_dir_ / "postgres.log", fs::copy_options::overwrite_existing, ec);
}

SyncSettings BenchEnv::default_settings(const BenchOptions& options) {
  SyncSettings s;
  s.prefix = bench_prefix;
  s.direction = "bidirectional";
  s.batch_size = options.batch_size;
  s.sync_interval = "5s";  // the default (README.md, "Configuration"), as are the timings below
  s.initial_backoff = "1s";
  s.max_backoff = "30s";
  s.log_level = options.log_level;
  s.request_timeout = "10s";
  s.dial_timeout = "5s";
  return s;
}

fs::path BenchEnv::write_config(const SyncSettings& settings, const std::string& name,
                                const std::vector<std::string>& endpoints, const std::string& extra_toml) {
  auto path = env.write_config(settings, name);
  std::string text = testing::read_text_file(path);
  if (!endpoints.empty()) {
    std::string list;
    for (const auto& e : endpoints) list += (list.empty() ? "\"" : ", \"") + e + "\"";
    auto at = text.find("endpoints = [");
    auto end = text.find(']', at);
    text.replace(at, end - at + 1, "endpoints = [" + list + "]");
  }
  text += extra_toml;
  {
    std::ofstream out(path, std::ios::trunc);
    out << text;
  }
  fs::copy_file(path, out_dir_ / name, fs::copy_options::overwrite_existing);
  return path;
}

void BenchEnv::migrate() {
  auto result = testing::run_command(service.binary(), {"migrate", "-c", config_.string()});
  if (result.exit_code != 0)
    throw std::runtime_error("etcd-sync migrate failed: " + result.stdout_text + result.stderr_text);
}

void BenchEnv::spawn_service() { service.start({"start", "-c", config_.string()}); }

void BenchEnv::start_service() {
  spawn_service();
  if (!service.wait_for_log("etcd-sync started", std::chrono::seconds(20)))
    throw std::runtime_error("etcd-sync did not start:\n" + service.log_text());
  // With the mirror on, wait until it watches: puts made before would be folded into its snapshot.
  if (settings_.direction != "postgres_to_etcd" && !service.wait_for_log("\"to\":\"watching\"", std::chrono::seconds(20)))
    throw std::runtime_error("the mirror did not start watching:\n" + service.log_text());
}

std::string BenchEnv::versions() {
  auto etcd = testing::run_command(testing::etcd_program(), {"--version"});
  std::string etcd_version = etcd.stdout_text.substr(0, etcd.stdout_text.find('\n'));
  if (etcd_version.rfind("etcd Version: ", 0) == 0) etcd_version = "etcd " + etcd_version.substr(14);
  auto pg = env.db().scalar("SHOW server_version").value_or("?");
  return etcd_version + ", PostgreSQL " + pg + "; service " + service.binary().string();
}

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  int size = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(static_cast<std::size_t>(std::max(size, 0)), '\0');
  std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

void detail(const std::string& text) {
  std::printf("  %s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace etcd_sync::bench
