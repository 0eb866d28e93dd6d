// PgConnection against a real PostgreSQL 15: parameters, errors, pipelines, scripts, LISTEN/NOTIFY,
// COPY, reconnecting after a restart, and the schema migrations.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/pg_connection.hpp"
#include "reactor/keys/pg_text.hpp"
#include "reactor/service/migrations.hpp"
#include "test/support/run_coroutine.hpp"
#include "test/support/servers.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr milliseconds kDeadline = 20s;
constexpr milliseconds kConnectTimeout = 5s;

/// Yields to the loop until `condition` holds (other coroutines and handlers run meanwhile).
asio::awaitable<void> yield_until(std::function<bool()> condition) {
  while (!condition()) co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

class PgAdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    temp_dir_ = std::make_unique<TempDir>();
    postgres_ = std::make_unique<PostgresServer>(temp_dir_->path());
    postgres_->start();
  }

  static void TearDownTestSuite() {
    postgres_.reset();
    temp_dir_.reset();
  }

  void SetUp() override { ASSERT_TRUE(postgres_ && postgres_->is_running()) << "postgres did not start"; }

  /// A database of its own for the test, so tables never clash between tests.
  std::string fresh_database() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("t_") + info->name();
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    postgres_->create_database(name);
    return name;
  }

  /// Runs a test coroutine; on a hang closes `pg` so its waits end.
  template <class Make>
  void run(Make&& make, PgConnection* pg = nullptr) {
    run_coroutine(io_, std::forward<Make>(make), kDeadline, [pg] {
      if (pg) pg->close();
    });
  }

  static inline std::unique_ptr<TempDir> temp_dir_;
  static inline std::unique_ptr<PostgresServer> postgres_;
  asio::io_context io_;
};

TEST_F(PgAdapterTest, QueryRoundTripsTextNullAndBinaryParameters) {
  PgConnection pg(io_, postgres_->conninfo(), "test");
  const std::string text = "it's \"quoted\", tabbed\tand ünïcødé ✓";
  // NUL, 0xff, a backslash sequence that looks like hex escaping, a quote, a high byte, a newline.
  const std::string bytes("\x00\xff\x01\\x00'\x00\x80\n", 11);
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        EXPECT_TRUE(pg.connected());
        auto result = co_await pg.query(
            "SELECT $1::text, $2::text IS NULL, $2::text, $3::bytea, length($3::bytea), $4::bigint + 1",
            pg_params(PgParam::text(text), PgParam::null(), PgParam::bytes(bytes), PgParam::int64(-41)));
        EXPECT_EQ(result.status(), PGRES_TUPLES_OK);
        EXPECT_EQ(result.rows(), 1);
        EXPECT_EQ(result.columns(), 6);
        EXPECT_EQ(result.text(0, 0), text);
        EXPECT_TRUE(result.boolean(0, 1));
        EXPECT_TRUE(result.is_null(0, 2));
        EXPECT_EQ(result.optional_text(0, 2), std::nullopt);
        EXPECT_EQ(result.bytea(0, 3), bytes);
        EXPECT_EQ(result.int64(0, 4), 11);
        EXPECT_EQ(result.int64(0, 5), -40);
      },
      &pg);
  EXPECT_NE(pg.endpoint().find("127.0.0.1:" + std::to_string(postgres_->port())), std::string::npos)
      << pg.endpoint();
}

TEST_F(PgAdapterTest, ServerErrorIsClassifiedBySqlstateAndConnectionStaysUsable) {
  PgConnection pg(io_, postgres_->conninfo(), "test");
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        auto error = co_await capture_error(pg.query("SELECT * FROM no_such_table"));
        EXPECT_TRUE(error.has_value());
        if (error) {
          EXPECT_EQ(error->kind(), ErrorKind::permanent) << error->what();
          EXPECT_NE(std::string(error->what()).find("42P01"), std::string::npos) << error->what();
        }
        auto one = co_await pg.query("SELECT 1");
        EXPECT_EQ(one.int64(0, 0), 1);
      },
      &pg);
}

TEST_F(PgAdapterTest, ConnectToClosedPortIsTransientAndNamesHostAndPort) {
  const int port = free_loopback_port();
  PgConnection pg(io_, "host=127.0.0.1 port=" + std::to_string(port) + " dbname=postgres user=postgres",
                  "test");
  std::optional<SyncError> error;
  const auto started = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> { error = co_await capture_error(pg.connect(kConnectTimeout)); }, &pg);
  EXPECT_LT(std::chrono::steady_clock::now() - started, kConnectTimeout) << "refused should fail at once";
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
  const std::string message = error->what();
  EXPECT_NE(message.find("127.0.0.1"), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(port)), std::string::npos) << message;
  EXPECT_EQ(error->peer(), Peer::postgresql);
  EXPECT_FALSE(pg.connected());
}

// A host name is looked up on Asio's resolver, not by libpq inside the event loop; every address is
// tried ("localhost" may name ::1 first, where this server does not listen). A name that does not
// resolve is a transient error that names it.
TEST_F(PgAdapterTest, HostNamesAreResolvedWithoutBlockingTheLoop) {
  auto by_name = postgres_->conninfo();
  by_name.replace(by_name.find("host=127.0.0.1"), 14, "host=localhost");
  PgConnection pg(io_, by_name, "by-name");
  PgConnection nowhere(io_, "host=nonexistent-host.invalid port=5432 dbname=x connect_timeout=2", "nowhere");
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        auto host = co_await pg.query("SELECT inet_server_addr()::text");
        EXPECT_EQ(host.text(0, 0), "127.0.0.1/32");
        error = co_await capture_error(nowhere.connect(kConnectTimeout));
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
  EXPECT_NE(std::string(error->what()).find("could not resolve host \"nonexistent-host.invalid\""), std::string::npos)
      << error->what();
}

TEST_F(PgAdapterTest, ConnectTimesOutWhenServerNeverAnswers) {
  // A listening socket that never accepts: the TCP handshake completes (backlog), the startup
  // packet is never answered.
  asio::ip::tcp::acceptor silent(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const int port = silent.local_endpoint().port();
  PgConnection pg(io_, "host=127.0.0.1 port=" + std::to_string(port) + " dbname=postgres user=postgres",
                  "test");
  std::optional<SyncError> error;
  const auto started = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> { error = co_await capture_error(pg.connect(300ms)); }, &pg);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_GE(elapsed, 300ms);
  EXPECT_LT(elapsed, 3s);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
  const std::string message = error->what();
  EXPECT_NE(message.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << message;
  EXPECT_NE(message.find("300 ms"), std::string::npos) << message;
  EXPECT_FALSE(pg.connected());
}

TEST_F(PgAdapterTest, WrongPasswordIsPermissionDeniedAndNeverEchoesThePassword) {
  // The cluster is initdb'd with trust auth; require a password for one role, over TCP, in front
  // of the trust lines (pg_hba.conf is first-match).
  {
    PgClient admin(postgres_->conninfo());
    admin.exec("CREATE ROLE pw_user LOGIN PASSWORD 'right-secret'");
    const auto hba = postgres_->data_dir() / "pg_hba.conf";
    const std::string old = read_text_file(hba);
    ASSERT_FALSE(old.empty());
    std::ofstream(hba, std::ios::trunc) << "host all pw_user 127.0.0.1/32 scram-sha-256\n" << old;
    admin.exec("SELECT pg_reload_conf()");
  }
  const std::string base = "host=127.0.0.1 port=" + std::to_string(postgres_->port()) + " dbname=postgres user=pw_user";
  // The reload is asynchronous in the postmaster: wait until a password-less login is refused.
  ASSERT_TRUE(wait_until(
      [&] {
        PGconn* probe = PQconnectdb(base.c_str());
        const bool refused = PQstatus(probe) != CONNECTION_OK;
        PQfinish(probe);
        return refused;
      },
      10s));

  PgConnection wrong(io_, base + " password=wrong-Secret-42", "test");
  PgConnection right(io_, base + " password=right-secret", "test");
  std::optional<SyncError> error;
  run([&]() -> asio::awaitable<void> {
    error = co_await capture_error(wrong.connect(kConnectTimeout));
    co_await right.connect(kConnectTimeout);
    auto who = co_await right.query("SELECT current_user");
    EXPECT_EQ(who.text(0, 0), "pw_user");
  });
  ASSERT_TRUE(error.has_value());
  const std::string message = error->what();
  EXPECT_EQ(error->kind(), ErrorKind::permission_denied) << message;
  EXPECT_NE(message.find("password authentication failed"), std::string::npos) << message;
  EXPECT_EQ(message.find("wrong-Secret-42"), std::string::npos) << message;
}

TEST_F(PgAdapterTest, NonexistentDatabaseIsCannotConnectWithoutPassword) {
  PgConnection pg(io_, postgres_->conninfo("no_such_db") + " password=Sekr1t-pw", "test");
  std::optional<SyncError> error;
  run([&]() -> asio::awaitable<void> { error = co_await capture_error(pg.connect(kConnectTimeout)); }, &pg);
  ASSERT_TRUE(error.has_value());
  const std::string message = error->what();
  // A missing database is "cannot connect" (transient: exit code 2, and engines retry until it
  // exists); only a missing role or failed authentication is permission_denied.
  EXPECT_EQ(error->kind(), ErrorKind::transient) << message;
  EXPECT_NE(message.find("\"no_such_db\" does not exist"), std::string::npos) << message;
  EXPECT_EQ(message.find("Sekr1t-pw"), std::string::npos) << message;
}

TEST_F(PgAdapterTest, PipelineOf500InsertsCommitsAll) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::vector<PgResult> results;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        std::vector<PgStatement> statements;
        for (int i = 0; i < 500; ++i)
          statements.push_back({"INSERT INTO items (id, name) VALUES ($1, $2)",
                                pg_params(PgParam::int64(i), PgParam::text("item-" + std::to_string(i)))});
        results = co_await pg.pipeline(std::move(statements));
        // Pipeline mode is left again: an ordinary query works on the same connection.
        auto count = co_await pg.query("SELECT count(*) FROM items");
        EXPECT_EQ(count.int64(0, 0), 500);
      },
      &pg);
  ASSERT_EQ(results.size(), 500u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status(), PGRES_COMMAND_OK);
    EXPECT_EQ(r.affected(), 1);
  }
  // Committed: another session sees every row.
  EXPECT_EQ(client.scalar("SELECT count(*) FROM items"), "500");
  EXPECT_EQ(client.scalar("SELECT name FROM items WHERE id = 499"), "item-499");
  EXPECT_EQ(client.scalar("SELECT sum(id) FROM items"), std::to_string(499 * 500 / 2));
}

// A statement larger than the socket buffers, sent while the server is busy with the statement
// before it, makes PQflush return 1 again and again; each time the connection waits until the
// socket is readable or writable (libpq's rule for nonblocking sends). Every byte of every statement
// arrives, in order. Under AddressSanitizer (scripts/test-asan) this also caught a use-after-free
// in that wait.
TEST_F(PgAdapterTest, StatementsLargerThanTheSocketBuffersArriveWhole) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE blobs (id integer PRIMARY KEY, body text NOT NULL)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  constexpr int kStatements = 3;
  constexpr std::size_t kBytes = 24 * 1024 * 1024;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        for (int i = 0; i < kStatements; ++i) {
          std::vector<PgStatement> statements;
          statements.push_back({"SELECT pg_sleep(0.2)", {}});  // the server reads nothing meanwhile
          statements.push_back({"INSERT INTO blobs (id, body) VALUES ($1, $2)",
                                pg_params(PgParam::int64(i), PgParam::text(std::string(kBytes, static_cast<char>('a' + i))))});
          co_await pg.pipeline(std::move(statements));
        }
      },
      &pg);
  EXPECT_EQ(client.scalar("SELECT count(*) FROM blobs WHERE body = repeat(chr(97 + id), " + std::to_string(kBytes) + ")"),
            std::to_string(kStatements));
}

TEST_F(PgAdapterTest, PipelineWithFailingStatementCommitsNothing) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        std::vector<PgStatement> statements;
        for (int id : {1, 2, 1, 3, 4})  // the third statement repeats a primary key
          statements.push_back({"INSERT INTO items (id, name) VALUES ($1, $2)",
                                pg_params(PgParam::int64(id), PgParam::text("x"))});
        error = co_await capture_error(pg.pipeline(std::move(statements)));
        EXPECT_EQ(client.scalar("SELECT count(*) FROM items"), "0") << "a failed pipeline committed rows";
        // The connection is usable afterwards, out of pipeline mode and out of any transaction: a
        // later insert is visible to another session at once.
        auto count = co_await pg.query("SELECT count(*) FROM items");
        EXPECT_EQ(count.int64(0, 0), 0);
        co_await pg.query("INSERT INTO items (id, name) VALUES (100, 'after')");
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::permanent) << error->what();
  EXPECT_NE(std::string(error->what()).find("23505"), std::string::npos) << error->what();
  EXPECT_EQ(client.scalar("SELECT string_agg(id::text, ',') FROM items"), "100");
}

// A statement marked `prepare` is parsed once per connection and then only executed; a failed
// PREPARE is reported and not kept; a new connection prepares again.
TEST_F(PgAdapterTest, PreparedStatementsArePreparedOncePerConnection) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)");
  PgConnection pg(io_, postgres_->conninfo(db), "prepared");
  const std::string insert = "INSERT INTO items (id, name) VALUES ($1, $2) RETURNING id * 10";
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        for (int round = 0; round < 3; ++round) {
          std::vector<PgStatement> statements;
          statements.push_back({insert, pg_params(PgParam::int64(round), PgParam::text("x")), true});
          statements.push_back({"SELECT count(*) FROM items", {}, true});
          auto results = co_await pg.pipeline(std::move(statements));
          EXPECT_EQ(results.size(), 2u);
          EXPECT_EQ(results[0].int64(0, 0), round * 10);
          EXPECT_EQ(results[1].int64(0, 0), round + 1);
        }
        auto kept = co_await pg.query("SELECT count(*) FROM pg_prepared_statements");
        EXPECT_EQ(kept.int64(0, 0), 2) << "each statement text is prepared once";

        std::vector<PgStatement> broken;
        broken.push_back({"SELEKT 1", {}, true});
        error = co_await capture_error(pg.pipeline(std::move(broken)));
        std::vector<PgStatement> again;
        again.push_back({"SELEKT 1", {}, true});
        EXPECT_TRUE(co_await capture_error(pg.pipeline(std::move(again)))) << "prepared again, failing again";

        co_await pg.connect(kConnectTimeout);  // a new session has no prepared statements
        std::vector<PgStatement> after;
        after.push_back({insert, pg_params(PgParam::int64(7), PgParam::text("y")), true});
        auto results = co_await pg.pipeline(std::move(after));
        EXPECT_EQ(results.at(0).int64(0, 0), 70);
        // The session is named for pg_stat_activity.
        auto name = co_await pg.query("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()");
        EXPECT_EQ(name.text(0, 0), "etcd-sync prepared");
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::permanent) << error->what();
  EXPECT_NE(std::string(error->what()).find("42601"), std::string::npos) << error->what();
  EXPECT_EQ(client.scalar("SELECT count(*) FROM items"), "4");
}

TEST_F(PgAdapterTest, ExecuteScriptRunsEveryStatement) {
  const auto db = fresh_database();
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.execute_script(
            "CREATE TABLE s (id integer PRIMARY KEY, v text);\n"
            "INSERT INTO s VALUES (1, 'a'), (2, 'b');\n"
            "INSERT INTO s VALUES (3, 'c');\n"
            "UPDATE s SET v = upper(v) WHERE id >= 2;\n"
            "DELETE FROM s WHERE id = 1;");
        auto rows = co_await pg.query("SELECT id, v FROM s ORDER BY id");
        EXPECT_EQ(rows.rows(), 2);
        if (rows.rows() == 2) {
          EXPECT_EQ(rows.int64(0, 0), 2);
          EXPECT_EQ(rows.text(0, 1), "B");
          EXPECT_EQ(rows.int64(1, 0), 3);
          EXPECT_EQ(rows.text(1, 1), "C");
        }
        // A failing statement in the middle: its error is thrown, the rest of the script is skipped
        // (simple protocol: one implicit transaction for the whole string).
        error = co_await capture_error(pg.execute_script(
            "INSERT INTO s VALUES (10, 'x'); SELECT 1/0; INSERT INTO s VALUES (11, 'y');"));
        auto count = co_await pg.query("SELECT count(*) FROM s");
        EXPECT_EQ(count.int64(0, 0), 2);
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::permanent) << error->what();
  EXPECT_NE(std::string(error->what()).find("22012"), std::string::npos) << error->what();
}

TEST_F(PgAdapterTest, ListenReceivesNotifyFromAnotherSession) {
  PgConnection pg(io_, postgres_->conninfo(), "listener");
  PgClient sender(postgres_->conninfo());
  const int sender_pid = PQbackendPID(sender.native());
  std::vector<PgNotification> notes;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.query("LISTEN test_channel");
        // The notification reaches our socket while we are not waiting yet: it must not be lost.
        sender.exec("SELECT pg_notify('test_channel', 'payload with spaces, \"quotes\" and ✓')");
        notes = co_await pg.wait_notifications();
      },
      &pg);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].channel, "test_channel");
  EXPECT_EQ(notes[0].payload, "payload with spaces, \"quotes\" and ✓");
  EXPECT_EQ(notes[0].sender_pid, sender_pid);
}

TEST_F(PgAdapterTest, CancelWaitEndsPendingWaitAndConnectionKeepsListening) {
  PgConnection pg(io_, postgres_->conninfo(), "listener");
  PgClient sender(postgres_->conninfo());
  std::optional<SyncError> cancelled;
  std::vector<PgNotification> later;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.query("LISTEN test_cancel");
        bool waiting = false, finished = false;
        asio::co_spawn(
            io_,
            [&]() -> asio::awaitable<void> {
              waiting = true;  // from here to the socket wait nothing yields
              cancelled = co_await capture_error(pg.wait_notifications());
              finished = true;
            },
            asio::detached);
        co_await yield_until([&] { return waiting; });
        EXPECT_FALSE(finished);
        pg.cancel_wait();
        co_await yield_until([&] { return finished; });
        // Cancelling a wait does not end the LISTEN: the next notification still arrives.
        sender.exec("NOTIFY test_cancel, 'after'");
        later = co_await pg.wait_notifications();
      },
      &pg);
  ASSERT_TRUE(cancelled.has_value());
  EXPECT_EQ(cancelled->kind(), ErrorKind::cancelled) << cancelled->what();
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].payload, "after");
}

TEST_F(PgAdapterTest, CopyFromStdinInChunksRoundTrips) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE copied (id integer PRIMARY KEY, body text, raw bytea)");

  std::vector<std::string> bodies = {
      "plain", "tab\there", "new\nline", "back\\slash", "carriage\rreturn", "\\N is not null here",
      "ünïcødé ✓", "",
  };
  for (int i = 0; i < 2000; ++i) bodies.push_back("row " + std::to_string(i) + " " + std::string(1000, 'a' + i % 26));
  bodies.push_back(std::string(512 * 1024, 'z') + "\tend\n");  // one large value
  const std::string raw("\x00\xff\\\t", 4);

  std::string small_chunks, big_chunk;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    std::string& out = i < 8 ? small_chunks : big_chunk;
    out += std::to_string(i);
    out += '\t';
    append_copy_text(out, bodies[i]);
    out += '\t';
    append_copy_bytea(out, raw);
    out += '\n';
  }
  ASSERT_GT(big_chunk.size(), 2'000'000u);

  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::int64_t affected = -1;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.copy_start("COPY copied (id, body, raw) FROM STDIN");
        // Chunks need not end on row boundaries: split the small rows at odd places.
        for (std::size_t at = 0; at < small_chunks.size(); at += 7)
          co_await pg.copy_data(std::string_view(small_chunks).substr(at, 7));
        co_await pg.copy_data(big_chunk);
        auto result = co_await pg.copy_end();
        affected = result.affected();
        auto count = co_await pg.query("SELECT count(*) FROM copied");
        EXPECT_EQ(count.int64(0, 0), static_cast<std::int64_t>(bodies.size()));
      },
      &pg);
  EXPECT_EQ(affected, static_cast<std::int64_t>(bodies.size()));
  const auto rows = client.exec("SELECT id, body, raw = '\\x00ff5c09'::bytea FROM copied ORDER BY id");
  ASSERT_EQ(rows.size(), bodies.size());
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    ASSERT_EQ(rows[i][0], std::to_string(i));
    ASSERT_EQ(rows[i][1], bodies[i]) << "row " << i;
    ASSERT_EQ(rows[i][2], "t") << "row " << i;
  }
}

TEST_F(PgAdapterTest, CopyWithBadDataThrowsAndConnectionStaysUsable) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE copied (id integer PRIMARY KEY, body text)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.copy_start("COPY copied (id, body) FROM STDIN");
        co_await pg.copy_data("1\tok\nnot-a-number\tbad\n");
        error = co_await capture_error(pg.copy_end());
        auto count = co_await pg.query("SELECT count(*) FROM copied");
        EXPECT_EQ(count.int64(0, 0), 0);
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::permanent) << error->what();
  EXPECT_NE(std::string(error->what()).find("22P02"), std::string::npos) << error->what();
}

TEST_F(PgAdapterTest, AbandonedCopyThenReconnectLeavesConnectionUsable) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE copied (id integer PRIMARY KEY, body text)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.copy_start("COPY copied (id, body) FROM STDIN");
        co_await pg.copy_data("1\tpartial\n");
        // The caller gives up mid-COPY (shutdown, a failed batch): close and start over.
        pg.close();
        co_await pg.connect(kConnectTimeout);
        auto count = co_await pg.query("SELECT count(*) FROM copied");
        EXPECT_EQ(count.int64(0, 0), 0);
      },
      &pg);
  EXPECT_EQ(client.scalar("SELECT count(*) FROM copied"), "0");
}

TEST_F(PgAdapterTest, TerminatedBackendEndsNotificationWaitAsTransient) {
  PgConnection pg(io_, postgres_->conninfo(), "listener");
  PgClient admin(postgres_->conninfo());
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        co_await pg.query("LISTEN test_terminated");
        const std::string pid((co_await pg.query("SELECT pg_backend_pid()")).text(0, 0));
        admin.exec_params("SELECT pg_terminate_backend($1::int)", {pid});
        error = co_await capture_error(pg.wait_notifications());
        EXPECT_FALSE(pg.connected());
        co_await pg.connect(kConnectTimeout);
        auto one = co_await pg.query("SELECT 1");
        EXPECT_EQ(one.int64(0, 0), 1);
      },
      &pg);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
  EXPECT_NE(std::string(error->what()).find("127.0.0.1:" + std::to_string(postgres_->port())), std::string::npos)
      << error->what();
}

TEST_F(PgAdapterTest, TerminatedBackendDuringCopyIsTransient) {
  const auto db = fresh_database();
  PgClient client(postgres_->conninfo(db));
  client.exec("CREATE TABLE copied (id integer PRIMARY KEY, body text)");
  PgConnection pg(io_, postgres_->conninfo(db), "test");
  std::optional<SyncError> error;
  std::string rows;
  for (int i = 0; i < 20000; ++i) rows += std::to_string(i) + "\t" + std::string(100, 'x') + "\n";
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        const std::string pid((co_await pg.query("SELECT pg_backend_pid()")).text(0, 0));
        co_await pg.copy_start("COPY copied (id, body) FROM STDIN");
        co_await pg.copy_data("1000000\tfirst\n");
        client.exec_params("SELECT pg_terminate_backend($1::int)", {pid});
        error = co_await capture_error([&]() -> asio::awaitable<void> {
          co_await pg.copy_data(rows);
          co_await pg.copy_end();
        }());
        co_await pg.connect(kConnectTimeout);
        auto count = co_await pg.query("SELECT count(*) FROM copied");
        EXPECT_EQ(count.int64(0, 0), 0);
      },
      &pg);
  ASSERT_TRUE(error.has_value()) << "COPY on a terminated backend succeeded";
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
}

TEST_F(PgAdapterTest, ReconnectsAfterServerRestart) {
  PgConnection pg(io_, postgres_->conninfo(), "test");
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        auto one = co_await pg.query("SELECT 1");
        EXPECT_EQ(one.int64(0, 0), 1);
      },
      &pg);
  postgres_->restart();
  std::optional<SyncError> error;
  run(
      [&]() -> asio::awaitable<void> {
        error = co_await capture_error(pg.query("SELECT 2"));
        EXPECT_FALSE(pg.connected());
        co_await pg.connect(kConnectTimeout);
        auto three = co_await pg.query("SELECT $1::int + 1", pg_params(PgParam::int64(2)));
        EXPECT_EQ(three.int64(0, 0), 3);
      },
      &pg);
  ASSERT_TRUE(error.has_value()) << "a query on the old connection succeeded";
  EXPECT_EQ(error->kind(), ErrorKind::transient) << error->what();
  EXPECT_TRUE(pg.connected());
}

TEST_F(PgAdapterTest, MigrationsApplyOnceAndNotifyWithoutValue) {
  const auto db = fresh_database();
  const std::string schema = "sync_it";
  PgConnection pg(io_, postgres_->conninfo(db), "migrate");
  int first = -1, second = -1;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.connect(kConnectTimeout);
        first = co_await migrate(pg, schema);
        second = co_await migrate(pg, schema);
      },
      &pg);
  EXPECT_EQ(first, static_cast<int>(schema_migrations().size()));
  EXPECT_GT(first, 0);
  EXPECT_EQ(second, 0);

  PgClient client(postgres_->conninfo(db));
  for (const char* table : {"etcd", "etcd_wal", "etcd_sync_checkpoint"}) {
    EXPECT_EQ(client.exec_params("SELECT to_regclass($1) IS NOT NULL", {schema + "." + table})[0][0], "t")
        << table;
  }
  EXPECT_EQ(client.scalar("SELECT count(*) FROM " + schema + ".etcd_sync_schema_version"),
            std::to_string(schema_migrations().size()));

  // The listener's view: INSERT INTO etcd_wal sends NOTIFY etcd_changes with the id, never the value.
  const std::string big_value(100 * 1024, 'v');
  std::vector<PgNotification> small_notes, big_notes;
  std::string small_id, big_id;
  run(
      [&]() -> asio::awaitable<void> {
        co_await pg.query("LISTEN etcd_changes");
        small_id = *client.exec("INSERT INTO " + schema +
                                ".etcd_wal (key, value) VALUES ('/k/small', 'small-secret-value') RETURNING id")[0][0];
        small_notes = co_await pg.wait_notifications();
        // A value far above NOTIFY's 8000-byte payload limit must not break the insert.
        big_id = *client.exec_params("INSERT INTO " + schema + ".etcd_wal (key, value) VALUES ('/k/big', $1) RETURNING id",
                                     {big_value})[0][0];
        big_notes = co_await pg.wait_notifications();
      },
      &pg);
  ASSERT_EQ(small_notes.size(), 1u);
  EXPECT_EQ(small_notes[0].channel, "etcd_changes");
  const auto small = nlohmann::json::parse(small_notes[0].payload);
  EXPECT_EQ(small.at("id").get<std::int64_t>(), std::stoll(small_id)) << small_notes[0].payload;
  EXPECT_EQ(small.at("key"), "/k/small");
  EXPECT_FALSE(small.contains("value")) << small_notes[0].payload;
  EXPECT_EQ(small_notes[0].payload.find("small-secret-value"), std::string::npos) << small_notes[0].payload;

  ASSERT_EQ(big_notes.size(), 1u);
  const auto big = nlohmann::json::parse(big_notes[0].payload);
  EXPECT_EQ(big.at("id").get<std::int64_t>(), std::stoll(big_id));
  EXPECT_FALSE(big.contains("value"));
  EXPECT_LT(big_notes[0].payload.size(), 1000u);
  EXPECT_EQ(client.scalar("SELECT length(value) FROM " + schema + ".etcd_wal WHERE id = " + big_id),
            std::to_string(big_value.size()));

  // Updates that keep a row pending or finish it send nothing; a requeue to pending notifies.
  std::vector<PgNotification> requeue_notes;
  run(
      [&]() -> asio::awaitable<void> {
        client.exec("UPDATE " + schema + ".etcd_wal SET retry_count = retry_count + 1");
        client.exec("UPDATE " + schema + ".etcd_wal SET status = 'failed'");
        client.exec("UPDATE " + schema + ".etcd_wal SET status = 'pending' WHERE id = " + big_id);
        requeue_notes = co_await pg.wait_notifications();
      },
      &pg);
  ASSERT_EQ(requeue_notes.size(), 1u);
  const auto requeue = nlohmann::json::parse(requeue_notes[0].payload);
  EXPECT_EQ(requeue.at("op"), "requeue") << requeue_notes[0].payload;
  EXPECT_EQ(requeue.at("id").get<std::int64_t>(), std::stoll(big_id));
}

}  // namespace
}  // namespace etcd_sync::testing
