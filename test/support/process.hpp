// Child processes a test owns: spawned with fork/exec (never a shell), reaped, never left behind;
// and commands run to completion with their output captured.
//
// Every child gets prctl(PR_SET_PDEATHSIG), so nothing outlives a test process that crashes or is
// killed. The death signal fires when the *thread* that forked exits: start children from the
// test's main thread (SetUpTestSuite, SetUp or the test body), not from a short-lived helper thread.
//
// Everything here blocks; it is test-side code and never runs on the service's reactor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace etcd_sync::testing {

/// Numeric identity a child switches to before exec (used to run PostgreSQL as `postgres`).
struct UserIds {
  uid_t uid;
  gid_t gid;
};

/// What to run and how. The environment is the test's own plus `env` (which overrides).
struct SpawnSpec {
  std::filesystem::path program;                      ///< absolute path, exec'd directly
  std::vector<std::string> args;                      ///< argv[1..]
  std::map<std::string, std::string> env;             ///< added to / overriding environ
  std::filesystem::path output_path;                  ///< stdout+stderr appended; empty: /dev/null
  std::filesystem::path working_dir;                  ///< empty: inherit the test's cwd
  int death_signal = SIGKILL;                         ///< delivered if the test process dies
  std::optional<UserIds> run_as;                      ///< setgid/setuid before exec
};

/// One child process owned by the test: spawns it, reaps it, never leaves it behind. The child
/// gets its own process group, stdin from /dev/null, default signal dispositions and no
/// inherited descriptors beyond 0-2. Exit codes are reported as the exit status, or -signal if
/// the child was killed by a signal.
class ChildProcess {
 public:
  ChildProcess() = default;
  /// Kills (SIGKILL) and reaps the child if it is still running.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  /// Starts the child with stdout+stderr appended to `spec.output_path`; throws
  /// std::runtime_error if a child is already running or exec fails.
  void start(const SpawnSpec& spec);
  /// Same, but stdout and stderr go to the given descriptors (-1: /dev/null); the caller keeps
  /// and closes its own copies. `spec.output_path` is ignored.
  void start(const SpawnSpec& spec, int stdout_fd, int stderr_fd);
  /// True while the child has not exited (reaps it if it has).
  bool running();
  /// The child's pid, or -1 if none was started.
  pid_t pid() const { return pid_; }
  /// The exit code once the child has been reaped.
  std::optional<int> exit_code() const { return exit_code_; }
  /// Sends `sig` to the child if it is running.
  void signal(int sig);
  /// Waits up to `deadline` for the child to exit; returns its exit code, or nullopt if it is
  /// still running.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  /// Sends `sig`, waits up to `grace`, then SIGKILLs; returns the exit code. Returns the known
  /// exit code at once if the child is no longer running.
  int stop(int sig, std::chrono::milliseconds grace);

 private:
  bool try_reap();

  pid_t pid_ = -1;
  bool reaped_ = true;
  std::optional<int> exit_code_;
};

/// A finished command: exit status (or -signal) and everything it wrote.
struct CommandResult {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
  bool timed_out = false;  ///< killed with SIGKILL after the timeout

  /// "exit N (timed out)", then stdout and stderr, for a failed expectation's message.
  std::string shown() const;
};

/// Runs `program` to completion (fork/exec, no shell) capturing stdout and stderr separately.
/// After `timeout` the child is killed and `timed_out` is set. Throws only if it cannot start.
CommandResult run_command(const std::filesystem::path& program,
                          const std::vector<std::string>& args,
                          const std::map<std::string, std::string>& env = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// `args` joined by single spaces, for messages.
std::string join_args(const std::vector<std::string>& args);

/// Direct children of `parent`, from /proc (PostgreSQL backends are their own session leaders,
/// so a process-group kill would miss them).
std::vector<pid_t> children_of(pid_t parent);

/// True once `pid` has exited. Reaps it if it is our child (an orphan handed to us as the
/// subreaper); otherwise a zombie counts as gone, since its reaper may never come.
bool process_gone(pid_t pid);

}  // namespace etcd_sync::testing
