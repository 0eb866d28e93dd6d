// Every exit path exits, and every wait on PostgreSQL is bounded, against real servers: a start
// that fails ends with its exit code (also while the metrics listener serves); SIGTERM ends the
// process within the stop grace period (1.5 s; the tests allow 3 s) while it starts, runs, backs
// off or waits inside a PostgreSQL call that never answers; a PostgreSQL that stops answering is
// reported ("peer unreachable", /readyz 503) within [postgresql] request_timeout, and its return
// too ("peer reachable again"), after which rows flow again.
//
// A hung PostgreSQL is its postmaster and every backend SIGSTOPped (test/support/frozen.hpp): the
// sockets stay open and calls get no answer, which a stopped or killed server never shows. A hung
// connect is a listener of the test's own that accepts and never answers.
//
// One etcd and one PostgreSQL serve the whole suite; each test gets a fresh database, writes its
// own config and runs its own etcd-sync with keys under its own prefix.

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test/support/config_edit.hpp"
#include "test/support/frozen.hpp"
#include "test/support/http_get.hpp"
#include "test/support/log_lines.hpp"
#include "test/support/posix.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

/// How long SIGTERM may take to end the process in any state: the 1.5 s stop grace and a margin.
constexpr milliseconds kStopDeadline = 3s;

milliseconds since(steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers a byte: a PostgreSQL
/// whose connect hangs after the TCP handshake (libpq then waits for the server's first reply).
class SilentListener {
 public:
  SilentListener() : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (listener_.get() < 0) throw_errno("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw_errno("bind");
    if (::listen(listener_.get(), 16) != 0) throw_errno("listen");
    socklen_t length = sizeof address;
    if (::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) throw_errno("getsockname");
    port_ = ntohs(address.sin_port);
  }
  ~SilentListener() {
    for (int fd : accepted_) ::close(fd);
  }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;

  int port() const { return port_; }
  /// Waits up to `deadline` for a client, accepts it and keeps it open, unanswered; false if none
  /// came.
  bool accept_one(milliseconds deadline) {
    pollfd p{listener_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(deadline.count())) != 1) return false;
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return false;
    accepted_.push_back(fd);
    return true;
  }

 private:
  Fd listener_;
  int port_ = 0;
  std::vector<int> accepted_;
};

/// Inodes of the TCP sockets `pid` holds open (from its /proc/<pid>/fd links "socket:[N]").
std::set<std::string> socket_inodes(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code link_ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_ec).string();
    if (!link_ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  return inodes;
}

/// Bytes that `client` (a pid) sent on its connections to 127.0.0.1:`server_port` and the server
/// has not read yet (the receive queues of the server's ends, from /proc/net/tcp). Above zero while
/// the server is frozen: the client is inside a call that gets no answer.
std::int64_t unread_by_server(pid_t client, int server_port) {
  struct Socket {
    unsigned local_port, remote_port;
    std::int64_t rx_queue;
    std::string inode;
  };
  std::vector<Socket> sockets;
  std::istringstream table(read_text_file("/proc/net/tcp"));
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode)) continue;
    Socket s;
    s.local_port = std::stoul(local.substr(local.find(':') + 1), nullptr, 16);
    s.remote_port = std::stoul(remote.substr(remote.find(':') + 1), nullptr, 16);
    s.rx_queue = std::stoll(queues.substr(queues.find(':') + 1), nullptr, 16);
    s.inode = inode;
    sockets.push_back(s);
  }
  const auto mine = socket_inodes(client);
  std::set<unsigned> client_ports;  // the client's ends of its connections to the server
  for (const auto& s : sockets)
    if (mine.count(s.inode) && s.remote_port == static_cast<unsigned>(server_port)) client_ports.insert(s.local_port);
  std::int64_t unread = 0;
  for (const auto& s : sockets)
    if (s.local_port == static_cast<unsigned>(server_port) && client_ports.count(s.remote_port)) unread += s.rx_queue;
  return unread;
}

class LifecycleTest : public SyncSuite {
 protected:
  void TearDown() override {
    if (service_ && service_->running()) service_->kill9();
    service_.reset();
  }

  static std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

  /// This test's etcd-sync (created on first use; its log is `<test name>.log`).
  ServiceProcess& service() {
    if (!service_) service_ = std::make_unique<ServiceProcess>(env_->dir.path(), test_name());
    return *service_;
  }

  /// This test's config: its own prefix, with PostgreSQL at `postgres_port` when given.
  std::filesystem::path config(SyncSettings settings, std::optional<int> postgres_port = std::nullopt) {
    auto path = env_->write_config(settings, test_name() + ".toml");
    if (postgres_port)
      replace_in_file(path, "port=" + std::to_string(env_->postgres.port()) + " ", "port=" + std::to_string(*postgres_port) + " ");
    return path;
  }
  static void serve_metrics(const std::filesystem::path& path, int port) {
    append_to_file(path, "\n[metrics]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n");
  }
  static void set_postgresql_key(const std::filesystem::path& path, const std::string& line) {
    replace_in_file(path, "[postgresql]\n", "[postgresql]\n" + line + "\n");
  }

  /// SIGTERM, then waits up to kStopDeadline for the exit; the exit code (nullopt if it is still
  /// running) and prints how long it took, for the record.
  std::optional<int> sigterm_and_wait(const std::string& state) {
    const auto sent = steady_clock::now();
    service().signal(SIGTERM);
    auto code = service().wait_exit(kStopDeadline);
    std::cout << "[ measured ] SIGTERM while " << state << ": "
              << (code ? "exit " + std::to_string(*code) + " after " + std::to_string(since(sent).count()) + " ms"
                       : "still running after " + std::to_string(since(sent).count()) + " ms")
              << std::endl;
    return code;
  }

  std::unique_ptr<ServiceProcess> service_;
};

// (a) A start that cannot connect to PostgreSQL (nothing listens on its port) ends with exit
// code 2 while the metrics listener is up: the listener must not keep the process alive. (It
// once did, for ever: the failed start returned, and the listener kept the event loop running.)
TEST_F(LifecycleTest, FailedStartExitsTwoWhileMetricsServe) {
  const int refused = free_loopback_port();
  ASSERT_FALSE(loopback_accepts(refused));
  auto path = config(settings_for("/refused-metrics/"), refused);
  serve_metrics(path, free_loopback_port());
  const auto started = steady_clock::now();
  service().start({"start", "-c", path.string()});
  auto code = service().wait_exit(15s);
  std::cout << "[ measured ] failed start with metrics: "
            << (code ? "exit " + std::to_string(*code) : std::string("still running")) << " after "
            << since(started).count() << " ms" << std::endl;
  ASSERT_TRUE(code.has_value()) << "still running 15 s after a start that cannot connect:\n" << service().log_text();
  EXPECT_EQ(*code, 2) << service().log_text();
  EXPECT_TRUE(find_log_line(service().log_text(), {{"level", "error"}, {"msg", "startup failed"}})) << service().log_text();
}

// (b) The same start without a metrics listener: exit code 2 too.
TEST_F(LifecycleTest, FailedStartExitsTwo) {
  const int refused = free_loopback_port();
  ASSERT_FALSE(loopback_accepts(refused));
  service().start({"start", "-c", config(settings_for("/refused/"), refused).string()});
  auto code = service().wait_exit(15s);
  ASSERT_TRUE(code.has_value()) << "still running 15 s after a start that cannot connect:\n" << service().log_text();
  EXPECT_EQ(*code, 2) << service().log_text();
}

// (c) SIGTERM while the start waits on a PostgreSQL that accepted the connection and never
// answers ends the start: exit 0 within the stop deadline. dial_timeout (30 s) and request_timeout
// (default 10 s) are far longer than the deadline, so only the signal can end the wait in time.
TEST_F(LifecycleTest, SigtermWhileStartingOnAHungConnectExitsInTime) {
  SilentListener silent;
  auto settings = settings_for("/starting/");
  settings.dial_timeout = "30s";
  service().start({"start", "-c", config(settings, silent.port()).string()});
  ASSERT_TRUE(silent.accept_one(10s)) << "etcd-sync never connected to PostgreSQL:\n" << service().log_text();
  ASSERT_TRUE(service().running()) << service().log_text();
  ASSERT_EQ(service().log_text().find("etcd-sync started"), std::string::npos) << "it should still be starting";
  auto code = sigterm_and_wait("starting (PostgreSQL connect hung)");
  ASSERT_TRUE(code.has_value()) << "still running " << kStopDeadline.count() << " ms after SIGTERM:\n" << service().log_text();
  EXPECT_EQ(*code, 0) << "a stop while starting ends the start (exit 0):\n" << service().log_text();
}

// (d) SIGTERM while running normally: exit 0 within the stop deadline (README, `start`).
TEST_F(LifecycleTest, SigtermWhileRunningExitsZeroInTime) {
  env_->start_service(service(), config(settings_for("/running/")));
  auto revision = env_->client->put("/running/a", "1");
  ASSERT_TRUE(env_->wait_mirrored(revision, 10s, "/running/"));
  auto code = sigterm_and_wait("running");
  ASSERT_TRUE(code.has_value()) << "still running " << kStopDeadline.count() << " ms after SIGTERM:\n" << service().log_text();
  EXPECT_EQ(*code, 0) << service().log_text();
}

// (e) SIGTERM while the engines back off from a stopped PostgreSQL: exit 0 within the stop
// deadline; a backoff's sleep (or a reconnect attempt) does not hold the stop up.
TEST_F(LifecycleTest, SigtermWhileBackingOffExitsZeroInTime) {
  env_->start_service(service(), config(settings_for("/backoff/")));
  service().mark_log();
  env_->postgres.stop();
  ASSERT_TRUE(wait_until([&] { return find_log_line(service().log_since_mark(), {{"to", "backing_off"}}).has_value(); }, 15s))
      << "no engine backs off after PostgreSQL stopped:\n" << service().log_since_mark();
  auto code = sigterm_and_wait("backing off (PostgreSQL stopped)");
  ASSERT_TRUE(code.has_value()) << "still running " << kStopDeadline.count() << " ms after SIGTERM:\n" << service().log_text();
  EXPECT_EQ(*code, 0) << service().log_text();
}

// (f) SIGTERM while etcd-sync waits inside a PostgreSQL call that gets no answer (the server
// frozen with its sockets open, and bytes etcd-sync sent still unread on them): exit 0 within the
// stop deadline. request_timeout (default 10 s) is longer than the deadline: the stop itself must
// cut the call short. PostgreSQL is thawed whichever way the test ends.
TEST_F(LifecycleTest, SigtermInsideAHungPostgresCallExitsZeroInTime) {
  env_->start_service(service(), config(settings_for("/hung-call/")));
  Frozen postgres(env_->postgres.pid(), /*with_children=*/true);
  ASSERT_TRUE(postgres.stopped()) << "PostgreSQL (" << postgres.count() << " processes) was not seen stopped";
  env_->client->put("/hung-call/a", "1");  // the mirror writes it into PostgreSQL: a call that hangs
  ASSERT_TRUE(wait_until([&] { return unread_by_server(service().pid(), env_->postgres.port()) > 0; }, 10s))
      << "etcd-sync sent nothing to the frozen PostgreSQL:\n" << service().log_text();
  auto code = sigterm_and_wait("inside a hung PostgreSQL call");
  ASSERT_TRUE(code.has_value()) << "still running " << kStopDeadline.count() << " ms after SIGTERM:\n" << service().log_text();
  EXPECT_EQ(*code, 0) << service().log_text();
}

// (g) A PostgreSQL that stops answering with [postgresql] request_timeout = "2s": within the
// timeout and a margin the service logs a warning "peer unreachable" naming postgresql and its
// endpoint, and /readyz answers 503. Once PostgreSQL answers again: an info "peer reachable again"
// naming postgresql, /readyz 200, and a row inserted into etcd_wal after the heal reaches etcd
// within the timeout and a margin. Prints the measured times.
TEST_F(LifecycleTest, HungPostgresIsReportedWithinTheRequestTimeoutAndRowsFlowAfterTheHeal) {
  constexpr milliseconds kRequestTimeout = 2s;
  constexpr milliseconds kMargin = 3s;
  const int metrics_port = free_loopback_port();
  auto path = config(settings_for("/hung/"));
  set_postgresql_key(path, "request_timeout = \"2s\"");
  serve_metrics(path, metrics_port);
  env_->start_service(service(), path);
  ASSERT_TRUE(wait_until([&] { return http_get_bounded(metrics_port, "/readyz") == "200\nready\n"; }, 10s))
      << http_get_bounded(metrics_port, "/readyz");
  const std::string postgres_port = std::to_string(env_->postgres.port());
  const LogFields unreachable{{"level", "warn"}, {"msg", "peer unreachable"}, {"peer", "postgresql"}};
  const LogFields reachable{{"level", "info"}, {"msg", "peer reachable again"}, {"peer", "postgresql"}};

  service().mark_log();
  std::optional<nlohmann::json> warning;
  {
    Frozen postgres(env_->postgres.pid(), /*with_children=*/true);
    ASSERT_TRUE(postgres.stopped()) << "PostgreSQL (" << postgres.count() << " processes) was not seen stopped";
    const auto frozen_at = steady_clock::now();
    env_->client->put("/hung/during", "1");  // work for PostgreSQL at once, whatever else is idle
    EXPECT_TRUE(wait_until(
        [&] {
          warning = find_log_line(service().log_since_mark(), unreachable);
          return warning.has_value();
        },
        kRequestTimeout + kMargin, 10ms))
        << "no warning \"peer unreachable\" for postgresql within " << (kRequestTimeout + kMargin).count() << " ms:\n"
        << service().log_since_mark();
    const auto detected = since(frozen_at);
    std::string readyz;
    EXPECT_TRUE(wait_until(
        [&] {
          readyz = http_get_bounded(metrics_port, "/readyz");
          return readyz.substr(0, 3) == "503";
        },
        kMargin))
        << "/readyz answered \"" << readyz << "\" while PostgreSQL hangs";
    std::cout << "[ measured ] hung PostgreSQL: \"peer unreachable\" logged "
              << (warning ? std::to_string(detected.count()) + " ms" : std::string("never")) << " after the freeze; /readyz "
              << readyz.substr(0, 3) << " after " << since(frozen_at).count() << " ms" << std::endl;
    if (warning) {
      EXPECT_NE(warning->value("endpoint", "").find(postgres_port), std::string::npos)
          << "the warning should name PostgreSQL's endpoint (port " << postgres_port << "): " << warning->dump();
    }
    service().mark_log();
  }  // PostgreSQL answers again

  const auto thawed_at = steady_clock::now();
  const std::string key = "/hung/after-heal";
  env_->insert_wal(key, "healed", std::nullopt);
  std::optional<milliseconds> row_applied;
  EXPECT_TRUE(wait_until(
      [&] {
        auto kv = env_->client->get(key);
        if (kv && kv->value() == "healed") row_applied = since(thawed_at);
        return row_applied.has_value();
      },
      kRequestTimeout + kMargin))
      << "the etcd_wal row inserted after the heal is not in etcd (" << env_->wal_status_counts() << "):\n"
      << service().log_since_mark();
  std::optional<milliseconds> reported;
  EXPECT_TRUE(wait_until(
      [&] {
        if (find_log_line(service().log_since_mark(), reachable)) reported = since(thawed_at);
        return reported.has_value();
      },
      kRequestTimeout + kMargin, 10ms))
      << "no info \"peer reachable again\" for postgresql:\n" << service().log_since_mark();
  EXPECT_TRUE(wait_until([&] { return http_get_bounded(metrics_port, "/readyz") == "200\nready\n"; }, kMargin))
      << "/readyz after the heal: " << http_get_bounded(metrics_port, "/readyz");
  std::cout << "[ measured ] after the heal: etcd_wal row in etcd "
            << (row_applied ? std::to_string(row_applied->count()) + " ms" : std::string("never")) << ", \"peer reachable again\" "
            << (reported ? std::to_string(reported->count()) + " ms" : std::string("never")) << " after SIGCONT" << std::endl;
  EXPECT_EQ(service().terminate(5s), 0);
}

}  // namespace
}  // namespace etcd_sync::testing
