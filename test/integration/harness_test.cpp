// The test harness itself: real etcd and PostgreSQL servers start, serve, and survive restarts.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "test/support/servers.hpp"
#include "test/support/service_process.hpp"

namespace etcd_sync::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class HarnessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    servers_ = std::make_unique<ServerPair>();
  }

  static void TearDownTestSuite() {
    servers_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(servers_ && servers_->etcd.is_running()) << "etcd did not start";
    ASSERT_TRUE(servers_ && servers_->postgres.is_running()) << "postgres did not start";
  }

  static inline std::unique_ptr<ServerPair> servers_;
};

TEST_F(HarnessTest, EtcdctlPutThenGet) {
  servers_->etcd.etcdctl({"put", "/harness/a", "hello world"});
  EXPECT_EQ(servers_->etcd.etcdctl({"get", "--print-value-only", "/harness/a"}), "hello world\n");
  EXPECT_EQ(servers_->etcd.etcdctl({"get", "--print-value-only", "/harness/missing"}), "");
}

TEST_F(HarnessTest, EtcdctlFailureThrowsWithStderr) {
  try {
    servers_->etcd.etcdctl({"no-such-command"});
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("no-such-command"), std::string::npos)
        << error.what();
  }
}

TEST_F(HarnessTest, PgClientCreatesAndReadsTable) {
  servers_->postgres.create_database("harness");
  PgClient client(servers_->postgres.conninfo("harness"));
  client.exec("CREATE TABLE t (id int PRIMARY KEY, name text)");
  client.exec_params("INSERT INTO t VALUES ($1, $2), ($3, $4)", {"1", "one", "2", std::nullopt});

  const auto rows = client.exec("SELECT id, name FROM t ORDER BY id");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (PgClient::Row{"1", "one"}));
  EXPECT_EQ(rows[1], (PgClient::Row{"2", std::nullopt}));
  EXPECT_EQ(client.scalar("SELECT count(*) FROM t"), "2");
  EXPECT_EQ(client.scalar("SELECT name FROM t WHERE id = 2"), std::nullopt);
  EXPECT_EQ(client.scalar("SELECT current_setting('server_encoding')"), "UTF8");
}

TEST_F(HarnessTest, PgClientReportsSqlstate) {
  PgClient client(servers_->postgres.conninfo());
  try {
    client.exec("SELECT * FROM no_such_table");
    FAIL() << "expected an exception";
  } catch (const PgError& error) {
    EXPECT_EQ(error.sqlstate(), "42P01") << error.what();
  }
  EXPECT_THROW(PgClient("host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2"),
               PgError);
}

TEST_F(HarnessTest, EtcdRestartKeepsEndpointAndData) {
  const std::string endpoint = servers_->etcd.endpoint();
  servers_->etcd.etcdctl({"put", "/harness/durable", "v1"});
  servers_->etcd.restart();
  EXPECT_EQ(servers_->etcd.endpoint(), endpoint);
  EXPECT_EQ(servers_->etcd.etcdctl({"get", "--print-value-only", "/harness/durable"}), "v1\n");
}

TEST_F(HarnessTest, EtcdSurvivesKill9) {
  servers_->etcd.etcdctl({"put", "/harness/crash", "v2"});
  servers_->etcd.kill9();
  EXPECT_FALSE(servers_->etcd.is_running());
  servers_->etcd.start();
  EXPECT_EQ(servers_->etcd.etcdctl({"get", "--print-value-only", "/harness/crash"}), "v2\n");
}

TEST_F(HarnessTest, PostgresRestartKeepsPortAndData) {
  const int port = servers_->postgres.port();
  {
    PgClient client(servers_->postgres.conninfo());
    client.exec("CREATE TABLE restart_check (v text); INSERT INTO restart_check VALUES ('kept')");
  }
  servers_->postgres.restart();
  EXPECT_EQ(servers_->postgres.port(), port);
  PgClient client(servers_->postgres.conninfo());
  EXPECT_EQ(client.scalar("SELECT v FROM restart_check"), "kept");
}

TEST_F(HarnessTest, PostgresSurvivesKill9WithOpenConnection) {
  PgClient survivor(servers_->postgres.conninfo());
  survivor.exec("CREATE TABLE crash_check (v int); INSERT INTO crash_check VALUES (7)");
  servers_->postgres.kill9();
  EXPECT_FALSE(servers_->postgres.is_running());
  EXPECT_THROW(survivor.exec("SELECT 1"), PgError);
  servers_->postgres.start();
  PgClient client(servers_->postgres.conninfo());
  EXPECT_EQ(client.scalar("SELECT v FROM crash_check"), "7");
}

TEST(HarnessHelpers, WaitUntilReturnsFinalResult) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls >= 3; }, seconds(5), milliseconds(1)));
  EXPECT_EQ(calls, 3);
  EXPECT_FALSE(wait_until([] { return false; }, milliseconds(30), milliseconds(5)));
}

TEST(HarnessHelpers, RunBinaryCapturesExit) {
  // ETCD_SYNC_BINARY is the real service in the project build; any binary exits to completion.
  const auto result = run_binary({"--help"}, {}, seconds(30));
  EXPECT_FALSE(result.timed_out);
  const auto shell = run_command("/bin/sh", {"-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(shell.exit_code, 3);
  EXPECT_EQ(shell.stdout_text, "out\n");
  EXPECT_EQ(shell.stderr_text, "err\n");
  const auto slow = run_command("/bin/sleep", {"30"}, {}, milliseconds(100));
  EXPECT_TRUE(slow.timed_out);
  EXPECT_EQ(slow.exit_code, -SIGKILL);
}

TEST(HarnessHelpers, ChildProcessLogsAndStops) {
  TempDir dir;
  SpawnSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo ready-$MARK; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"};
  spec.env = {{"MARK", "42"}};
  spec.output_path = dir.path() / "child.log";
  ChildProcess child;
  child.start(spec);
  EXPECT_TRUE(wait_until(
      [&] { return read_text_file(spec.output_path).find("ready-42") != std::string::npos; },
      seconds(5)));
  EXPECT_EQ(child.stop(SIGTERM, seconds(5)), 0);
  EXPECT_NE(read_text_file(spec.output_path).find("bye"), std::string::npos);
  EXPECT_FALSE(child.running());
}

TEST(HarnessHelpers, ChildProcessReportsExecFailure) {
  ChildProcess child;
  SpawnSpec spec;
  spec.program = "/nonexistent/etcd-sync";
  EXPECT_THROW(child.start(spec), std::runtime_error);
  EXPECT_FALSE(child.running());
}

}  // namespace
}  // namespace etcd_sync::testing
