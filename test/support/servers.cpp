#include "test/support/servers.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

extern char** environ;

namespace etcd_sync::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr const char* etcd_program = "/usr/bin/etcd";
constexpr const char* etcdctl_program = "/usr/bin/etcdctl";
constexpr const char* pg_fallback_bin_dir = "/usr/lib/postgresql/15/bin";

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// A descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

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

std::string join_args(const std::vector<std::string>& args) {
  std::string text;
  for (const auto& arg : args) {
    if (!text.empty()) text += ' ';
    text += arg;
  }
  return text;
}

/// True if something accepts TCP connections on 127.0.0.1:port.
bool loopback_accepts(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::uintmax_t file_size_or_zero(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

/// Directory holding initdb and postgres: `pg_config --bindir`, else the Debian 12 default.
fs::path postgres_bin_dir() {
  static const fs::path dir = [] {
    const char* path_env = std::getenv("PATH");
    std::stringstream path_list(path_env != nullptr ? path_env : "/usr/bin:/bin");
    std::string entry;
    while (std::getline(path_list, entry, ':')) {
      const fs::path pg_config = fs::path(entry.empty() ? "." : entry) / "pg_config";
      if (::access(pg_config.c_str(), X_OK) != 0) continue;
      const auto result = run_command(fs::absolute(pg_config), {"--bindir"}, {}, seconds(10));
      std::string bindir = result.stdout_text;
      while (!bindir.empty() && std::isspace(static_cast<unsigned char>(bindir.back()))) {
        bindir.pop_back();
      }
      if (result.exit_code == 0 && ::access((fs::path(bindir) / "postgres").c_str(), X_OK) == 0) {
        return fs::path(bindir);
      }
      break;
    }
    return fs::path(pg_fallback_bin_dir);
  }();
  return dir;
}

/// conninfo value quoting: bare if safe, else single-quoted with \ and ' escaped.
std::string conninfo_value(const std::string& value) {
  const bool bare = !value.empty() && value.find_first_of(" \t\n'\\=") == std::string::npos;
  if (bare) return value;
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::string quote_identifier(const std::string& name) {
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

/// Direct children of `parent`, from /proc (PostgreSQL backends are their own session leaders,
/// so a process-group kill would miss them).
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

/// True once `pid` has exited. Reaps it if it is our child (an orphan handed to us as the
/// subreaper); otherwise a zombie counts as gone, since its reaper may never come.
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

}  // namespace

// --- small helpers ------------------------------------------------------------------------------

int free_loopback_port() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno("bind 127.0.0.1:0");
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw_errno("getsockname");
  }
  return ntohs(addr.sin_port);
}

bool wait_until(const std::function<bool()>& pred, milliseconds deadline, milliseconds poll) {
  const auto end = steady_clock::now() + deadline;
  while (!pred()) {
    const auto now = steady_clock::now();
    if (now >= end) return pred();
    std::this_thread::sleep_for(std::min<steady_clock::duration>(poll, end - now));
  }
  return true;
}

TempDir::TempDir() {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string pattern = (tmpdir != nullptr && *tmpdir != '\0') ? tmpdir : "/tmp";
  pattern += "/etcd-sync-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = fs::absolute(pattern);
  if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_.string());
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) {
      std::error_code ignored;
      fs::remove_all(path_, ignored);
    }
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

std::string read_text_file(const fs::path& path, std::uintmax_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string last_lines(std::string_view text, std::size_t max_lines,
                       const std::function<bool(std::string_view line)>& keep) {
  std::vector<std::string_view> kept;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (!keep || keep(line)) kept.push_back(line);
  }
  std::string out;
  for (std::size_t i = kept.size() > max_lines ? kept.size() - max_lines : 0; i < kept.size(); ++i)
    out.append(kept[i]).push_back('\n');
  return out;
}

std::string tail_of_file(const fs::path& path, std::size_t max_lines) {
  return last_lines(read_text_file(path), max_lines);
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

// --- EtcdServer ----------------------------------------------------------------------------------

EtcdServer::EtcdServer(const fs::path& parent_dir, std::string name)
    : name_(std::move(name)),
      dir_(parent_dir / name_),
      data_dir_(dir_ / "data"),
      log_path_(dir_ / "etcd.log") {
  fs::create_directories(dir_);
}

EtcdServer::~EtcdServer() {
  try {
    stop();
  } catch (...) {
    // ChildProcess's destructor still SIGKILLs and reaps.
  }
}

void EtcdServer::launch() {
  const std::string client = client_url();
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  SpawnSpec spec;
  spec.program = etcd_program;
  spec.args = {"--name=" + name_,
               "--data-dir=" + data_dir_.string(),
               "--listen-client-urls=" + client,
               "--advertise-client-urls=" + client,
               "--listen-peer-urls=" + peer,
               "--initial-advertise-peer-urls=" + peer,
               "--initial-cluster=" + name_ + "=" + peer,
               "--initial-cluster-state=new",
               // A lone member has no peer to lose, so short raft timers are safe; they cut the
               // election after a restart from ~1.5 s to a few hundred ms.
               "--heartbeat-interval=25",
               "--election-timeout=250"};
  spec.args.insert(spec.args.end(), extra_arguments_.begin(), extra_arguments_.end());
  if (!tls_.empty()) {
    for (const auto& flag : {"--trusted-ca-file=" + tls_[0], "--cert-file=" + tls_[1], "--key-file=" + tls_[2],
                             std::string("--client-cert-auth")})
      spec.args.push_back(flag);
  }
  spec.output_path = log_path_;
  spec.working_dir = dir_;
  spec.death_signal = SIGKILL;
  process_.start(spec);
}

bool EtcdServer::wait_ready(milliseconds deadline) {
  const auto ready = [this] {
    if (!loopback_accepts(client_port_)) return false;
    const auto health = run_command(
        etcdctl_program,
        [&] {
          std::vector<std::string> args{"--endpoints=" + client_url(), "--dial-timeout=1s",
                                        "--command-timeout=2s", "endpoint", "health"};
          auto tls = etcdctl_tls_arguments();
          args.insert(args.begin(), tls.begin(), tls.end());
          return args;
        }(),
        {{"ETCDCTL_API", "3"}}, seconds(5));
    return health.exit_code == 0;
  };
  // Stop polling as soon as the child dies: the log says why.
  bool is_ready = false;
  wait_until([&] { return !process_.running() || (is_ready = ready()); }, deadline,
             milliseconds(25));
  return is_ready;
}

void EtcdServer::start() {
  if (is_running()) return;
  // A fresh member may retry on other ports if one was taken meanwhile; a member with data
  // must come back on its recorded peer URL.
  const bool fresh = !fs::exists(data_dir_ / "member");
  constexpr int attempts = 3;
  for (int attempt = 1;; ++attempt) {
    if (client_port_ == 0) {
      client_port_ = free_loopback_port();
      do {
        peer_port_ = free_loopback_port();
      } while (peer_port_ == client_port_);
    }
    if (fresh) fs::remove_all(data_dir_);
    const auto log_offset = file_size_or_zero(log_path_);
    launch();
    if (wait_ready(seconds(20))) return;

    const bool exited = !process_.running();
    process_.stop(SIGKILL, milliseconds(0));
    const std::string log = read_text_file(log_path_, log_offset);
    if (fresh && exited && attempt < attempts &&
        log.find("address already in use") != std::string::npos) {
      client_port_ = 0;
      continue;
    }
    throw std::runtime_error("etcd on " + endpoint() + " did not become ready (" +
                             (exited ? "exited" : "timed out") + "); " + log_path_.string() +
                             " ends with:\n" + tail_of_file(log_path_));
  }
}

void EtcdServer::stop() { process_.stop(SIGTERM, seconds(10)); }

void EtcdServer::kill9() { process_.stop(SIGKILL, milliseconds(0)); }

void EtcdServer::restart() {
  stop();
  start();
}

bool EtcdServer::is_running() { return process_.running(); }

std::string EtcdServer::endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }

std::string EtcdServer::client_url() const { return (tls_.empty() ? "http://" : "https://") + endpoint(); }

std::vector<std::string> EtcdServer::etcdctl_tls_arguments() const {
  if (tls_.empty()) return {};
  return {"--cacert=" + tls_[0], "--cert=" + tls_[3], "--key=" + tls_[4]};
}

std::string EtcdServer::etcdctl(const std::vector<std::string>& args) const {
  std::vector<std::string> full = etcdctl_tls_arguments();
  for (const auto& flag : {"--endpoints=" + client_url(), std::string("--dial-timeout=2s"), std::string("--command-timeout=10s")})
    full.push_back(flag);
  full.insert(full.end(), args.begin(), args.end());
  const auto result = run_command(etcdctl_program, full, {{"ETCDCTL_API", "3"}}, seconds(30));
  if (result.exit_code != 0 || result.timed_out) {
    throw std::runtime_error("etcdctl " + join_args(args) + " failed (exit " +
                             std::to_string(result.exit_code) +
                             (result.timed_out ? ", timed out" : "") + "): " +
                             result.stderr_text);
  }
  return result.stdout_text;
}

// --- PostgresServer ------------------------------------------------------------------------------

PostgresServer::PostgresServer(const fs::path& parent_dir, std::string name)
    : name_(std::move(name)),
      dir_(parent_dir / name_),
      data_dir_(dir_ / "data"),
      socket_dir_(dir_ / "sock"),
      log_path_(dir_ / "postgres.log"),
      bin_dir_(postgres_bin_dir()) {
  // initdb and postgres refuse to run as root.
  if (::geteuid() == 0) {
    const passwd* user = ::getpwnam("postgres");
    if (user == nullptr) {
      throw std::runtime_error("running as root but there is no `postgres` user to run as");
    }
    run_as_ = UserIds{user->pw_uid, user->pw_gid};
  }
  fs::create_directories(socket_dir_);
  if (run_as_) {
    for (const auto& dir : {dir_, socket_dir_}) {
      if (::chown(dir.c_str(), run_as_->uid, run_as_->gid) != 0) throw_errno("chown " + dir.string());
    }
  }
}

PostgresServer::~PostgresServer() {
  try {
    stop();
  } catch (...) {
    // ChildProcess's destructor still SIGKILLs and reaps.
  }
}

void PostgresServer::set_setting(const std::string& name, const std::string& value) {
  settings_[name] = value;
}

void PostgresServer::init_cluster() {
  if (fs::exists(data_dir_ / "PG_VERSION")) return;
  fs::remove_all(data_dir_);  // leftovers of a failed initdb
  fs::create_directory(data_dir_);
  fs::permissions(data_dir_, fs::perms::owner_all);
  if (run_as_ && ::chown(data_dir_.c_str(), run_as_->uid, run_as_->gid) != 0) {
    throw_errno("chown " + data_dir_.string());
  }
  const fs::path initdb_log = dir_ / "initdb.log";
  SpawnSpec spec;
  spec.program = bin_dir_ / "initdb";
  spec.args = {"--pgdata=" + data_dir_.string(), "--username=postgres", "--auth=trust",
               "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"};
  spec.output_path = initdb_log;
  spec.working_dir = dir_;
  spec.run_as = run_as_;
  ChildProcess initdb;
  initdb.start(spec);
  const auto code = initdb.wait_exit(seconds(60));
  if (code != 0) {
    throw std::runtime_error("initdb " + data_dir_.string() + " failed (" +
                             (code ? "exit " + std::to_string(*code) : std::string("timed out")) +
                             "); " + initdb_log.string() + " ends with:\n" +
                             tail_of_file(initdb_log));
  }
}

void PostgresServer::launch() {
  SpawnSpec spec;
  spec.program = bin_dir_ / "postgres";
  spec.args = {"-D", data_dir_.string(),
               "-p", std::to_string(port_),
               "-k", socket_dir_.string(),
               "-c", "listen_addresses=127.0.0.1",
               "-c", "fsync=off",
               "-c", "full_page_writes=off"};
  for (const auto& [name, value] : settings_) {
    spec.args.push_back("-c");
    spec.args.push_back(name + "=" + value);
  }
  spec.output_path = log_path_;
  spec.working_dir = dir_;
  // SIGQUIT is postgres' immediate shutdown: the postmaster takes its backends with it.
  spec.death_signal = SIGQUIT;
  spec.run_as = run_as_;
  process_.start(spec);
}

bool PostgresServer::wait_ready(milliseconds deadline) {
  const std::string probe = conninfo() + " connect_timeout=2";
  bool is_ready = false;
  wait_until(
      [&] {
        return !process_.running() || (is_ready = PQping(probe.c_str()) == PQPING_OK);
      },
      deadline, milliseconds(25));
  return is_ready;
}

void PostgresServer::wait_crashed_backends_gone() {
  // Backends of a killed postmaster keep the old shared memory attached until they exit, and a
  // new postmaster refuses to start while they do.
  wait_until(
      [this] { return std::all_of(crashed_backends_.begin(), crashed_backends_.end(), process_gone); },
      seconds(10));
  crashed_backends_.clear();
}

void PostgresServer::start() {
  if (is_running()) return;
  init_cluster();
  wait_crashed_backends_gone();
  const bool first = port_ == 0;  // restarts keep their port
  constexpr int attempts = 3;
  for (int attempt = 1;; ++attempt) {
    if (port_ == 0) port_ = free_loopback_port();
    const auto log_offset = file_size_or_zero(log_path_);
    launch();
    if (wait_ready(seconds(30))) return;

    const bool exited = !process_.running();
    process_.stop(SIGQUIT, seconds(5));
    const std::string log = read_text_file(log_path_, log_offset);
    if (first && exited && attempt < attempts &&
        log.find("Address already in use") != std::string::npos) {
      port_ = 0;
      continue;
    }
    throw std::runtime_error("postgres on port " + std::to_string(port_) +
                             " did not become ready (" + (exited ? "exited" : "timed out") +
                             "); " + log_path_.string() + " ends with:\n" +
                             tail_of_file(log_path_));
  }
}

void PostgresServer::stop() {
  if (!process_.running()) return;
  process_.signal(SIGINT);  // fast shutdown: roll back open transactions, checkpoint, exit
  if (process_.wait_exit(seconds(10))) return;
  process_.signal(SIGQUIT);  // immediate shutdown
  if (process_.wait_exit(seconds(5))) return;
  kill9();
}

void PostgresServer::kill9() {
  if (!process_.running()) return;
  const pid_t postmaster = process_.pid();
  // Orphaned backends come to us rather than to PID 1, which in a container often never reaps
  // them (they would linger as zombies).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Stop the postmaster first so it cannot fork replacements, then take its children.
  ::kill(postmaster, SIGSTOP);
  crashed_backends_ = children_of(postmaster);
  ::kill(postmaster, SIGKILL);
  for (const pid_t backend : crashed_backends_) ::kill(backend, SIGKILL);
  process_.stop(SIGKILL, milliseconds(0));
  wait_crashed_backends_gone();
}

void PostgresServer::restart() {
  stop();
  start();
}

bool PostgresServer::is_running() { return process_.running(); }

std::string PostgresServer::conninfo(const std::string& db) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + conninfo_value(db) +
         " user=postgres";
}

void PostgresServer::create_database(const std::string& name) {
  PgClient client(conninfo());
  client.exec("CREATE DATABASE " + quote_identifier(name));
}

// --- PgClient ------------------------------------------------------------------------------------

namespace {

/// Rows of a successful result; throws PgError (and frees the result) otherwise.
PgClient::Rows take_rows(PGconn* conn, PGresult* result) {
  const auto status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
    std::string message = result != nullptr ? PQresultErrorMessage(result) : "";
    if (message.empty()) message = PQerrorMessage(conn);
    if (message.empty()) message = std::string("unexpected result ") + PQresStatus(status);
    const char* field = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = field != nullptr ? field : "";
    PQclear(result);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    throw PgError(message, std::move(sqlstate));
  }
  PgClient::Rows rows;
  const int row_count = PQntuples(result);
  const int column_count = PQnfields(result);
  rows.reserve(static_cast<std::size_t>(row_count));
  for (int r = 0; r < row_count; ++r) {
    PgClient::Row row;
    row.reserve(static_cast<std::size_t>(column_count));
    for (int c = 0; c < column_count; ++c) {
      if (PQgetisnull(result, r, c)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(result, r, c),
                                     static_cast<std::size_t>(PQgetlength(result, r, c))));
      }
    }
    rows.push_back(std::move(row));
  }
  PQclear(result);
  return rows;
}

}  // namespace

PgClient::PgClient(const std::string& conninfo) { connect(conninfo); }

PgClient::~PgClient() {
  if (conn_ != nullptr) PQfinish(conn_);
}

PgClient::PgClient(PgClient&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}

PgClient& PgClient::operator=(PgClient&& other) noexcept {
  if (this != &other) {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

void PgClient::connect(const std::string& conninfo) {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = PQconnectdb(conninfo.c_str());
  if (conn_ == nullptr) throw PgError("PQconnectdb: out of memory", "");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn_);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    PQfinish(conn_);
    conn_ = nullptr;
    throw PgError("cannot connect (" + conninfo + "): " + message, "");
  }
}

bool PgClient::connected() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

PgClient::Rows PgClient::exec(const std::string& sql) {
  if (conn_ == nullptr) throw PgError("PgClient::exec: not connected", "");
  return take_rows(conn_, PQexec(conn_, sql.c_str()));
}

PgClient::Rows PgClient::exec_params(const std::string& sql,
                                     const std::vector<std::optional<std::string>>& params) {
  if (conn_ == nullptr) throw PgError("PgClient::exec_params: not connected", "");
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  return take_rows(conn_, PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()),
                                       nullptr, values.data(), nullptr, nullptr, 0));
}

std::optional<std::string> PgClient::scalar(const std::string& sql) {
  const auto rows = exec(sql);
  if (rows.empty() || rows.front().empty()) return std::nullopt;
  return rows.front().front();
}

}  // namespace etcd_sync::testing
