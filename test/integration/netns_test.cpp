// The network-fault support (test/support/netns.hpp) on real servers: etcd and PostgreSQL run in
// the test's private network namespace, clients run in an isolated host joined to it by a veth
// pair, and iptables rules inside the host silence a port, the whole link, or a share of packets.
//
// This binary has its own main(): it enters the private namespace before gtest starts and before
// any thread or socket exists (test/CMakeLists.txt links it with gtest, not gtest_main). Without
// root the namespace is refused and every test is skipped, saying why.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "test/support/netns.hpp"
#include "test/support/posix.hpp"
#include "test/support/server_programs.hpp"
#include "test/support/servers.hpp"

namespace etcd_sync::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

const std::string kEtcdctl = etcdctl_program().string();

/// A libpq connection opened from inside `host`: the connect runs on a thread that joined the
/// host's network namespace, and the socket stays in that namespace whichever thread uses it
/// afterwards. Throws what the connect threw (PgError when the server does not answer).
PgClient connect_inside(const IsolatedHost& host, const std::string& conninfo) {
  PgClient client;
  std::exception_ptr failure;
  std::thread thread([&] {
    try {
      Fd ns(::open(("/run/netns/" + host.name()).c_str(), O_RDONLY | O_CLOEXEC));
      if (ns.get() < 0) throw_errno("open /run/netns/" + host.name());
      if (::setns(ns.get(), CLONE_NEWNET) != 0) throw_errno("setns " + host.name());
      client.connect(conninfo);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  thread.join();
  if (failure) std::rethrow_exception(failure);
  return client;
}

/// The inode of a process's network namespace ("net:[4026532...]"), to tell namespaces apart.
std::string network_namespace_of(const std::string& pid) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + pid + "/ns/net", ec).string();
}

class NetnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!in_private_network()) return;
    servers_ = std::make_unique<ServerPair>(true);
  }

  static void TearDownTestSuite() {
    servers_.reset();
  }

  void SetUp() override {
    if (!in_private_network()) GTEST_SKIP() << "no private network namespace: " << private_network_error();
    ASSERT_TRUE(servers_ && servers_->etcd.is_running()) << "etcd did not start";
    ASSERT_TRUE(servers_ && servers_->postgres.is_running()) << "postgres did not start";
    host_ = std::make_unique<IsolatedHost>();
  }

  void TearDown() override { host_.reset(); }

  /// `etcdctl endpoint health` against etcd's address as the host sees it, run inside the host
  /// (1 s to connect, 2 s for the request).
  CommandResult etcd_health() const {
    return host_->run(kEtcdctl,
                      {"--endpoints=http://" + host_->server_address() + ":" + std::to_string(servers_->etcd.client_port()),
                       "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"},
                      {{"ETCDCTL_API", "3"}}, seconds(15));
  }

  /// conninfo of PostgreSQL at its address as the host sees it; 2 s to connect.
  std::string pg_conninfo() const {
    return "host=" + host_->server_address() + " port=" + std::to_string(servers_->postgres.port()) +
           " dbname=postgres user=postgres connect_timeout=2";
  }

  bool pg_answers() const {
    try {
      PgClient client = connect_inside(*host_, pg_conninfo());
      return client.scalar("SELECT 1") == "1";
    } catch (const PgError&) {
      return false;
    }
  }

  static inline std::unique_ptr<ServerPair> servers_;
  std::unique_ptr<IsolatedHost> host_;
};

TEST_F(NetnsTest, HostReachesTheServersAtItsServerAddress) {
  EXPECT_EQ(host_->server_address().rfind("10.213.", 0), 0u) << host_->server_address();
  const auto health = etcd_health();
  EXPECT_EQ(health.exit_code, 0) << health.shown();
  EXPECT_TRUE(pg_answers());
  // PostgreSQL sees the connection come from the host's own address.
  PgClient client = connect_inside(*host_, pg_conninfo());
  EXPECT_EQ(client.scalar("SELECT host(inet_client_addr())"), host_->host_address());
  // Inside, 127.0.0.1 is the host's own loopback: nothing listens there.
  const auto loopback = host_->run(kEtcdctl,
                                   {"--endpoints=http://127.0.0.1:" + std::to_string(servers_->etcd.client_port()),
                                    "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"},
                                   {{"ETCDCTL_API", "3"}}, seconds(15));
  EXPECT_NE(loopback.exit_code, 0) << loopback.shown();
}

TEST_F(NetnsTest, ExecPrefixKeepsThePidAndEntersTheHost) {
  SpawnSpec spec;
  const auto prefix = host_->exec_prefix();
  spec.program = prefix.front();
  spec.args.assign(prefix.begin() + 1, prefix.end());
  spec.args.push_back("/bin/sleep");
  spec.args.push_back("60");
  ChildProcess child;
  child.start(spec);
  const std::string pid = std::to_string(child.pid());
  // `ip` execs sleep in its own place: the child's pid is sleep's, in the host's namespace.
  EXPECT_TRUE(wait_until([&] { return read_text_file("/proc/" + pid + "/comm") == "sleep\n"; }, seconds(10)))
      << "comm: " << read_text_file("/proc/" + pid + "/comm");
  const std::string inside = network_namespace_of(pid);
  EXPECT_FALSE(inside.empty());
  EXPECT_NE(inside, network_namespace_of("self"));
  EXPECT_EQ(child.stop(SIGTERM, seconds(5)), -SIGTERM);
}

TEST_F(NetnsTest, CutSilencesOnePortUntilHealed) {
  host_->cut(servers_->etcd.client_port());
  EXPECT_EQ(host_->cut_ports().count(servers_->etcd.client_port()), 1u);
  const auto began = steady_clock::now();
  const auto cut = etcd_health();
  // Silence, not a refusal: etcdctl gives up at its own deadline.
  EXPECT_NE(cut.exit_code, 0) << cut.shown();
  EXPECT_GE(steady_clock::now() - began, milliseconds(900)) << cut.shown();
  EXPECT_TRUE(pg_answers()) << "only etcd's port is cut";
  EXPECT_GT(host_->dropped_packets(), 0u);

  host_->heal(servers_->etcd.client_port());
  EXPECT_TRUE(host_->cut_ports().empty());
  EXPECT_TRUE(wait_until([&] { return etcd_health().exit_code == 0; }, seconds(15))) << etcd_health().shown();

  host_->cut(servers_->postgres.port());
  const auto connecting = steady_clock::now();
  EXPECT_THROW(connect_inside(*host_, pg_conninfo()), PgError);
  EXPECT_GE(steady_clock::now() - connecting, milliseconds(1900)) << "connect_timeout=2 ran out";
  EXPECT_EQ(etcd_health().exit_code, 0) << "only PostgreSQL's port is cut";
  host_->heal(servers_->postgres.port());
  EXPECT_TRUE(wait_until([&] { return pg_answers(); }, seconds(15)));
}

TEST_F(NetnsTest, EstablishedConnectionGoesSilentWithoutAReset) {
  // tcp_user_timeout bounds how long sent data may stay unacknowledged: the query fails then, not
  // at once (a reset would fail it at once). libpq sets it only with keepalives on (the default).
  PgClient client = connect_inside(*host_, pg_conninfo() + " tcp_user_timeout=1500");
  ASSERT_EQ(client.scalar("SELECT 1"), "1");
  host_->cut(servers_->postgres.port());
  const auto began = steady_clock::now();
  EXPECT_THROW(client.exec("SELECT 1"), PgError);
  EXPECT_GE(steady_clock::now() - began, milliseconds(1400));
  host_->heal(servers_->postgres.port());
  EXPECT_TRUE(wait_until([&] { return pg_answers(); }, seconds(15)));
}

TEST_F(NetnsTest, CutAllSilencesEveryServerUntilHealAll) {
  host_->cut_all();
  EXPECT_NE(etcd_health().exit_code, 0);
  EXPECT_FALSE(pg_answers());
  host_->heal_all();
  EXPECT_TRUE(wait_until([&] { return etcd_health().exit_code == 0; }, seconds(15))) << etcd_health().shown();
  EXPECT_TRUE(wait_until([&] { return pg_answers(); }, seconds(15)));
}

TEST_F(NetnsTest, LossyDropsSomePacketsWhileTrafficStillFlows) {
  PgClient client = connect_inside(*host_, pg_conninfo());
  const std::uint64_t before = host_->dropped_packets();
  host_->lossy(30);
  // TCP retransmits what the link drops: every query succeeds, some take a retransmission longer.
  int queries = 0;
  EXPECT_TRUE(wait_until(
      [&] {
        EXPECT_EQ(client.scalar("SELECT 1"), "1");
        ++queries;
        return host_->dropped_packets() >= before + 5;
      },
      seconds(60), milliseconds(0)))
      << "after " << queries << " queries, " << host_->dropped_packets() - before << " packets dropped";
  host_->heal_all();
  EXPECT_GE(host_->dropped_packets(), before + 5) << "heal_all keeps the count";
  EXPECT_EQ(client.scalar("SELECT 1"), "1");
}

TEST_F(NetnsTest, DestructorRemovesTheHostAndTheNextHostSweepsDeadOnes) {
  const std::string name = host_->name();
  ASSERT_TRUE(fs::exists("/run/netns/" + name));
  host_.reset();
  EXPECT_FALSE(fs::exists("/run/netns/" + name));

  // A host left behind by a test process that died: its pid is one that has exited.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(dead, &status, 0), dead);
  const std::string stale = "etcd-sync-test-" + std::to_string(dead) + "-0";
  const auto added = run_command("/usr/sbin/ip", {"netns", "add", stale}, {}, seconds(10));
  ASSERT_EQ(added.exit_code, 0) << added.shown();
  host_ = std::make_unique<IsolatedHost>();
  EXPECT_FALSE(fs::exists("/run/netns/" + stale)) << "the new host swept " << stale;
  run_command("/usr/sbin/ip", {"netns", "del", stale}, {}, seconds(10));
}

}  // namespace
}  // namespace etcd_sync::testing

int main(int argc, char** argv) {
  // First, before gtest and before any thread or socket: servers and hosts live in this namespace.
  etcd_sync::testing::enter_private_network();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
