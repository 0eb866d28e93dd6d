// Throwaway etcd and PostgreSQL servers for integration tests, and the child-process plumbing
// they (and ServiceProcess) share.
//
// Every server runs as a direct child of the test process on free loopback ports with its data,
// socket and log files under a TempDir. Children are started with fork/exec (never a shell) and
// prctl(PR_SET_PDEATHSIG), so nothing outlives a test process that crashes or is killed. The
// death signal fires when the *thread* that forked exits: start servers from the test's main
// thread (SetUpTestSuite, SetUp or the test body), not from a short-lived helper thread.
//
// Everything here blocks; it is test-side code and never runs on the service's reactor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pg_conn;

namespace etcd_sync::testing {

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
/// Another process may take it before the caller binds; the servers below retry on a clash.
int free_loopback_port();

/// Polls `pred` every `poll` until it returns true or `deadline` has passed; returns the result
/// of the last evaluation, so a condition that turns true at the deadline still counts.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds poll = std::chrono::milliseconds(20));

/// A fresh directory under $TMPDIR (or /tmp), mode 0755 so the postgres user can traverse it,
/// removed recursively when the object is destroyed. Declare it before the servers that live in
/// it, so they stop before their files go.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// The directory's absolute path (empty after a move).
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// The file's contents from byte `offset` on; "" if it cannot be read.
std::string read_text_file(const std::filesystem::path& path, std::uintmax_t offset = 0);

/// The last `max_lines` lines of `text` for which `keep` holds (every line when `keep` is empty),
/// each ended by a newline: the end of a log, for error messages.
std::string last_lines(std::string_view text, std::size_t max_lines,
                       const std::function<bool(std::string_view line)>& keep = {});

/// The last `max_lines` lines of a file, for error messages.
std::string tail_of_file(const std::filesystem::path& path, std::size_t max_lines = 40);

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
};

/// Runs `program` to completion (fork/exec, no shell) capturing stdout and stderr separately.
/// After `timeout` the child is killed and `timed_out` is set. Throws only if it cannot start.
CommandResult run_command(const std::filesystem::path& program,
                          const std::vector<std::string>& args,
                          const std::map<std::string, std::string>& env = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// A single-member etcd 3.4 cluster (/usr/bin/etcd) on two free loopback ports. The ports are
/// chosen once, so restart() brings the same member back on the same endpoint with its data.
class EtcdServer {
 public:
  /// Files go to `parent_dir`/`name` (data dir, etcd.log). Nothing starts until start().
  explicit EtcdServer(const std::filesystem::path& parent_dir, std::string name = "etcd");
  /// Stops the server (SIGTERM, then SIGKILL).
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  /// Launches etcd and waits (up to 20 s) until `etcdctl endpoint health` succeeds; throws with
  /// the log tail if it does not come up.
  void start();
  /// Serves clients over TLS from the next start(): server certificate and key, and the CA that
  /// signs client certificates (client certificates are then required). etcdctl() uses
  /// `client_cert`/`client_key` to connect.
  void use_tls(const std::filesystem::path& ca, const std::filesystem::path& cert, const std::filesystem::path& key,
               const std::filesystem::path& client_cert, const std::filesystem::path& client_key) {
    tls_ = {ca.string(), cert.string(), key.string(), client_cert.string(), client_key.string()};
  }
  /// Extra etcd flags for the next start(), e.g. {"--auth-token-ttl=1"}.
  void add_arguments(const std::vector<std::string>& arguments) {
    extra_arguments_.insert(extra_arguments_.end(), arguments.begin(), arguments.end());
  }
  /// SIGTERM and wait; SIGKILL after 10 s. No-op if not running.
  void stop();
  /// SIGKILL and reap: an abrupt crash. Data written so far survives (it is in the page cache).
  void kill9();
  /// stop() then start(): same ports, same data.
  void restart();
  bool is_running();

  /// "127.0.0.1:PORT" of the client listener (gRPC endpoint for the service's config).
  std::string endpoint() const;
  /// "http://127.0.0.1:PORT".
  std::string client_url() const;
  int client_port() const { return client_port_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }
  const std::filesystem::path& log_path() const { return log_path_; }
  pid_t pid() const { return process_.pid(); }

  /// Runs /usr/bin/etcdctl (API v3) against this server and returns its stdout; throws
  /// std::runtime_error carrying stderr if it exits non-zero.
  std::string etcdctl(const std::vector<std::string>& args) const;

 private:
  void launch();
  bool wait_ready(std::chrono::milliseconds deadline);

  std::string name_;
  std::vector<std::string> extra_arguments_;
  std::vector<std::string> tls_;  // ca, cert, key, client cert, client key; empty = plain HTTP
  std::vector<std::string> etcdctl_tls_arguments() const;
  std::filesystem::path dir_;
  std::filesystem::path data_dir_;
  std::filesystem::path log_path_;
  int client_port_ = 0;
  int peer_port_ = 0;
  ChildProcess process_;
};

/// A PostgreSQL 15 cluster: initdb on first start (trust auth, superuser `postgres`, UTF8), then
/// `postgres` itself as a child. fsync and full_page_writes are off for speed; that only risks
/// data on an OS crash, so a kill9() still keeps every acknowledged commit. synchronous_commit
/// stays on: with fsync off it costs one write() per commit, while off it would lose the last
/// ~600 ms of acknowledged commits on kill9() (they sit in the killed server's WAL buffers).
/// When the test runs as root, initdb and postgres run as the `postgres` system user.
class PostgresServer {
 public:
  /// Files go to `parent_dir`/`name` (data/, sock/, postgres.log, initdb.log).
  explicit PostgresServer(const std::filesystem::path& parent_dir, std::string name = "postgres");
  /// Stops the server (fast shutdown, then SIGQUIT).
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  /// Adds `-c name=value` to the next start (e.g. "max_connections", "20").
  void set_setting(const std::string& name, const std::string& value);
  /// Runs initdb if there is no cluster yet, launches postgres and waits (up to 30 s) until
  /// PQping says it accepts connections; throws with the log tail otherwise.
  void start();
  /// Fast shutdown (SIGINT) and wait; SIGQUIT after 10 s, then SIGKILL. No-op if not running.
  void stop();
  /// SIGKILL the postmaster and its backends: an abrupt crash. The next start() runs crash
  /// recovery.
  void kill9();
  /// stop() then start(): same port, same data.
  void restart();
  bool is_running();

  int port() const { return port_; }
  /// "host=127.0.0.1 port=P dbname=DB user=postgres".
  std::string conninfo(const std::string& db = "postgres") const;
  /// CREATE DATABASE `name` (quoted as an identifier).
  void create_database(const std::string& name);
  const std::filesystem::path& data_dir() const { return data_dir_; }
  const std::filesystem::path& log_path() const { return log_path_; }
  pid_t pid() const { return process_.pid(); }

 private:
  void init_cluster();
  void launch();
  bool wait_ready(std::chrono::milliseconds deadline);
  void wait_crashed_backends_gone();

  std::string name_;
  std::filesystem::path dir_;
  std::filesystem::path data_dir_;
  std::filesystem::path socket_dir_;
  std::filesystem::path log_path_;
  std::filesystem::path bin_dir_;
  std::optional<UserIds> run_as_;
  std::map<std::string, std::string> settings_;
  int port_ = 0;
  ChildProcess process_;
  std::vector<pid_t> crashed_backends_;  ///< killed by kill9(); may still hold shared memory
};

/// An error from PgClient: the server's message plus its SQLSTATE (empty for connection errors).
class PgError : public std::runtime_error {
 public:
  PgError(const std::string& message, std::string sqlstate)
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// Blocking libpq connection for test assertions and fixtures. Values travel as text; NULL is
/// nullopt.
class PgClient {
 public:
  using Row = std::vector<std::optional<std::string>>;
  using Rows = std::vector<Row>;

  PgClient() = default;
  /// Connects at once; throws PgError on failure.
  explicit PgClient(const std::string& conninfo);
  ~PgClient();
  PgClient(PgClient&& other) noexcept;
  PgClient& operator=(PgClient&& other) noexcept;
  PgClient(const PgClient&) = delete;
  PgClient& operator=(const PgClient&) = delete;

  /// (Re)connects; throws PgError on failure.
  void connect(const std::string& conninfo);
  bool connected() const;
  /// Runs one or more statements (simple protocol); returns the last statement's rows. Throws
  /// PgError on any error.
  Rows exec(const std::string& sql);
  /// Runs one statement with $1..$n text parameters (nullopt is NULL). Throws PgError.
  Rows exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params);
  /// The first column of the first row, or nullopt if there is no row or it is NULL.
  std::optional<std::string> scalar(const std::string& sql);
  /// The underlying libpq handle, for anything not wrapped here.
  pg_conn* native() const { return conn_; }

 private:
  pg_conn* conn_ = nullptr;
};

}  // namespace etcd_sync::testing
