// The etcd-sync binary under test, run as a child of the test process.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "test/support/servers.hpp"

namespace etcd_sync::testing {

/// Path of the etcd-sync executable the tests run (ETCD_SYNC_BINARY, set by CMake).
std::filesystem::path service_binary();

/// One etcd-sync process. stdout and stderr are appended to `<log_dir>/<name>.log`, across
/// restarts, with a marker line before each start. The child gets PR_SET_PDEATHSIG(SIGKILL).
class ServiceProcess {
 public:
  explicit ServiceProcess(const std::filesystem::path& log_dir, std::string name = "etcd-sync");
  /// Kills (SIGKILL) and reaps the process if it is still running. When the current test has
  /// failed, first prints to stderr whether it was running (or its exit code), the last
  /// kLogLinesOnFailure lines of its log above debug level, and the log's last lines of any level.
  ~ServiceProcess();
  static constexpr std::size_t kLogLinesOnFailure = 150;
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;

  /// Runs etcd-sync through `wrapper` from the next start(): wrapper[0] is an absolute program
  /// path, the rest its arguments, and etcd-sync's path and arguments follow. The wrapper must exec
  /// etcd-sync in its own place (as IsolatedHost::exec_prefix()'s `ip netns exec NAME` does), so that
  /// pid() and signal() reach etcd-sync itself and the parent-death signal stays set. Empty: none.
  void set_wrapper(std::vector<std::string> wrapper) { wrapper_ = std::move(wrapper); }
  /// Starts etcd-sync with `args` (argv[1..]) and `env` added to the test's environment. Throws
  /// if it is already running or cannot be exec'd. Moves the log mark to the end of the log.
  void start(const std::vector<std::string>& args,
             const std::map<std::string, std::string>& env = {});
  /// Waits until `needle` appears in the log after the mark (set by start() and mark_log()).
  /// Returns false at the deadline, or early if the process has exited without writing it.
  bool wait_for_log(const std::string& needle, std::chrono::milliseconds deadline);
  /// Moves the mark to the current end of the log, so wait_for_log() only sees newer lines.
  void mark_log();
  /// The whole log, every run included.
  std::string log_text() const;
  /// The log written since the mark.
  std::string log_since_mark() const;
  const std::filesystem::path& log_path() const { return log_path_; }

  /// SIGTERM, then waits up to `deadline` for a clean exit; returns the exit code (-signal if
  /// killed by one). A process still running at the deadline is SIGKILLed: the result is then
  /// -SIGKILL, which fails any EXPECT_EQ(0, ...).
  int terminate(std::chrono::milliseconds deadline = std::chrono::seconds(10));
  /// Waits up to `deadline` for the process to exit on its own; nullopt if it is still running.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  /// Sends `sig` (e.g. SIGHUP) if the process is running.
  void signal(int sig);
  /// SIGKILL and reap.
  void kill9();
  bool running();
  /// The exit code once the process has exited and been reaped.
  std::optional<int> exit_code() const { return process_.exit_code(); }
  pid_t pid() const { return process_.pid(); }

 private:
  std::filesystem::path log_path_;
  std::uintmax_t mark_ = 0;
  int starts_ = 0;
  std::vector<std::string> wrapper_;  ///< set_wrapper(): the command that execs etcd-sync
  ChildProcess process_;
};

/// Runs etcd-sync to completion (e.g. `config validate`) with stdout and stderr captured apart.
/// After `timeout` it is killed and `timed_out` is set.
CommandResult run_binary(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace etcd_sync::testing
