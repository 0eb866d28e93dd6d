#include "test/support/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "test/support/files.hpp"
#include "test/support/posix.hpp"
#include "test/support/wait.hpp"

extern char** environ;

namespace etcd_sync::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

/// Where a child's exec went wrong, reported through the close-on-exec error pipe.
enum class ChildStage : int {
  redirect = 1,   ///< dup2 of stdio
  credentials,    ///< setgroups/setgid/setuid
  death_signal,   ///< prctl(PR_SET_PDEATHSIG)
  chdir,          ///< chdir to the working directory
  exec,           ///< execve itself
};

const char* describe(ChildStage stage) {
  switch (stage) {
    case ChildStage::redirect: return "redirect stdio";
    case ChildStage::credentials: return "switch user";
    case ChildStage::death_signal: return "set parent-death signal";
    case ChildStage::chdir: return "change directory";
    case ChildStage::exec: return "exec";
  }
  return "start";
}

/// Everything the child needs, prepared before fork: after fork only async-signal-safe calls
/// are allowed (the test process may have gRPC threads holding malloc locks).
struct PreparedExec {
  std::string program;
  std::vector<std::string> argv_storage;
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  std::string working_dir;
  int max_fd = 0;

  explicit PreparedExec(const SpawnSpec& spec) : program(spec.program.string()) {
    argv_storage.push_back(program);
    argv_storage.insert(argv_storage.end(), spec.args.begin(), spec.args.end());
    for (auto& arg : argv_storage) argv.push_back(arg.data());
    argv.push_back(nullptr);

    std::map<std::string, std::string> env;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
      std::string_view text(*entry);
      const auto eq = text.find('=');
      if (eq == std::string_view::npos) continue;
      env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
    }
    for (const auto& [name, value] : spec.env) env[name] = value;
    for (const auto& [name, value] : env) env_storage.push_back(name + "=" + value);
    for (auto& entry : env_storage) envp.push_back(entry.data());
    envp.push_back(nullptr);

    working_dir = spec.working_dir.string();
    rlimit limit{};
    max_fd = 65536;
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
      max_fd = static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 65536));
    }
  }
};

[[noreturn]] void child_fail(int error_fd, ChildStage stage) {
  const int report[2] = {static_cast<int>(stage), errno};
  [[maybe_unused]] const auto written = ::write(error_fd, report, sizeof report);
  ::_exit(127);
}

/// Runs in the forked child; async-signal-safe calls only.
[[noreturn]] void exec_child(const PreparedExec& prepared, const SpawnSpec& spec, pid_t parent,
                             int null_fd, int stdout_fd, int stderr_fd, int error_fd) {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Ignored signals stay ignored across exec (gRPC ignores SIGPIPE); give the child defaults.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &default_action, nullptr);

  // Own process group: a Ctrl-C meant for the test runner does not reach the servers directly;
  // they go down through the death signal when the test process does.
  ::setpgid(0, 0);

  if (::dup2(null_fd, STDIN_FILENO) < 0) child_fail(error_fd, ChildStage::redirect);
  if (::dup2(stdout_fd >= 0 ? stdout_fd : null_fd, STDOUT_FILENO) < 0) {
    child_fail(error_fd, ChildStage::redirect);
  }
  if (::dup2(stderr_fd >= 0 ? stderr_fd : null_fd, STDERR_FILENO) < 0) {
    child_fail(error_fd, ChildStage::redirect);
  }

  if (spec.run_as) {
    const gid_t gid = spec.run_as->gid;
    if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(spec.run_as->uid) != 0) {
      child_fail(error_fd, ChildStage::credentials);
    }
  }
  // After setuid: a credential change clears the parent-death signal.
  if (::prctl(PR_SET_PDEATHSIG, spec.death_signal) != 0) {
    child_fail(error_fd, ChildStage::death_signal);
  }
  if (::getppid() != parent) ::_exit(127);  // the test died before prctl took effect

  if (!prepared.working_dir.empty() && ::chdir(prepared.working_dir.c_str()) != 0) {
    child_fail(error_fd, ChildStage::chdir);
  }

  // Descriptors the test process opened without O_CLOEXEC (other threads, libraries) must not
  // leak into servers; the error pipe is already close-on-exec.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < prepared.max_fd; ++fd) {
      if (fd != error_fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  }

  ::execve(prepared.program.c_str(), prepared.argv.data(), prepared.envp.data());
  child_fail(error_fd, ChildStage::exec);
}

int decode_wait_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

}  // namespace

std::string join_args(const std::vector<std::string>& args) {
  std::string text;
  for (const auto& arg : args) {
    if (!text.empty()) text += ' ';
    text += arg;
  }
  return text;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    const std::string stat = read_text_file(entry.path() / "stat");
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(close_paren + 1));
    char state = 0;
    pid_t ppid = 0;
    if (fields >> state >> ppid && ppid == parent) children.push_back(std::stoi(name));
  }
  return children;
}

bool process_gone(pid_t pid) {
  int status = 0;
  const pid_t reaped = ::waitpid(pid, &status, WNOHANG);
  if (reaped == pid) return true;
  if (reaped == 0) return false;
  const std::string stat = read_text_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return true;
  const char state = stat[close_paren + 2];
  return state == 'Z' || state == 'X';
}

// --- ChildProcess --------------------------------------------------------------------------------

ChildProcess::~ChildProcess() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

void ChildProcess::start(const SpawnSpec& spec) {
  if (spec.output_path.empty()) {
    start(spec, -1, -1);
    return;
  }
  Fd out(::open(spec.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (out.get() < 0) throw_errno("open " + spec.output_path.string());
  start(spec, out.get(), out.get());
}

void ChildProcess::start(const SpawnSpec& spec, int stdout_fd, int stderr_fd) {
  if (running()) {
    throw std::runtime_error(spec.program.string() + ": a child is already running (pid " +
                             std::to_string(pid_) + ")");
  }
  const PreparedExec prepared(spec);
  Fd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (null_fd.get() < 0) throw_errno("open /dev/null");
  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd error_read(error_pipe[0]);
  Fd error_write(error_pipe[1]);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    exec_child(prepared, spec, parent, null_fd.get(), stdout_fd, stderr_fd, error_write.get());
  }
  error_write.reset();
  pid_ = pid;
  reaped_ = false;
  exit_code_.reset();

  // EOF on the error pipe means execve succeeded (the pipe is close-on-exec).
  int report[2] = {0, 0};
  ssize_t got = 0;
  do {
    got = ::read(error_read.get(), report, sizeof report);
  } while (got < 0 && errno == EINTR);
  if (got > 0) {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    exit_code_ = decode_wait_status(status);
    throw std::runtime_error("cannot start " + spec.program.string() + ": " +
                             describe(static_cast<ChildStage>(report[0])) + " failed: " +
                             std::strerror(report[1]));
  }
}

bool ChildProcess::try_reap() {
  if (reaped_) return true;
  int status = 0;
  const pid_t result = ::waitpid(pid_, &status, WNOHANG);
  if (result == 0) return false;
  if (result == pid_) {
    exit_code_ = decode_wait_status(status);
  } else if (errno != EINTR) {
    exit_code_ = -1;  // reaped elsewhere (ECHILD); the code is lost
  } else {
    return false;
  }
  reaped_ = true;
  return true;
}

bool ChildProcess::running() { return pid_ > 0 && !try_reap(); }

void ChildProcess::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::wait_exit(milliseconds deadline) {
  if (pid_ <= 0) return std::nullopt;
  if (!wait_until([this] { return try_reap(); }, deadline, milliseconds(5))) return std::nullopt;
  return exit_code_;
}

int ChildProcess::stop(int sig, milliseconds grace) {
  if (pid_ <= 0) return -1;
  if (!running()) return exit_code_.value_or(-1);
  ::kill(pid_, sig);
  if (auto code = wait_exit(grace)) return *code;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  exit_code_ = decode_wait_status(status);
  return *exit_code_;
}

std::string CommandResult::shown() const {
  return "exit " + std::to_string(exit_code) + (timed_out ? " (timed out)" : "") + "\nstdout:\n" + stdout_text +
         "stderr:\n" + stderr_text;
}

CommandResult run_command(const fs::path& program, const std::vector<std::string>& args,
                          const std::map<std::string, std::string>& env, milliseconds timeout) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd out_read(out_pipe[0]);
  Fd out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);

  SpawnSpec spec;
  spec.program = program;
  spec.args = args;
  spec.env = env;
  ChildProcess child;
  child.start(spec, out_write.get(), err_write.get());
  out_write.reset();
  err_write.reset();

  CommandResult result;
  const auto end = steady_clock::now() + timeout;
  pollfd fds[2] = {{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  int open_count = 2;
  while (open_count > 0) {
    const auto left = std::chrono::duration_cast<milliseconds>(end - steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    const int ready = ::poll(fds, 2, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw_errno("poll");
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buffer[8192];
      const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got > 0) {
        sinks[i]->append(buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        fds[i].fd = -1;  // EOF (or a broken pipe): stop polling it
        --open_count;
      }
    }
  }
  if (!result.timed_out) {
    const auto left = std::max(milliseconds(0),
                               std::chrono::duration_cast<milliseconds>(end - steady_clock::now()));
    if (auto code = child.wait_exit(left)) {
      result.exit_code = *code;
      return result;
    }
    result.timed_out = true;
  }
  result.exit_code = child.stop(SIGKILL, milliseconds(0));
  return result;
}

}  // namespace etcd_sync::testing
