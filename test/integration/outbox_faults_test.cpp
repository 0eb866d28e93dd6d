// The outbox under faults, deterministic (README "How it works", "Settled states"): etcd-sync
// killed or frozen at the exact moment a Txn has landed (failpoints), a delete that finds the key
// gone, an outcome whose row was replaced meanwhile (as after a lossy PostgreSQL failover), and an
// etcd frozen while Txns are in flight. Each row must end with an outcome that is true, and no
// write may reach etcd twice.

#include <gtest/gtest.h>

#include <csignal>
#include <string>

#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

class OutboxFaultsTest : public SyncSuite {
 protected:
  void TearDown() override {
    if (service_ && service_->running()) service_->terminate();
    service_.reset();
  }

  /// Starts (or restarts) this test's etcd-sync, with `failpoints` (ETCD_SYNC_FAILPOINTS) if given.
  void start(const SyncSettings& settings, const std::string& failpoints = "") {
    auto config = env_->write_config(settings);
    if (!service_) service_ = std::make_unique<ServiceProcess>(env_->dir.path(), test_name());
    std::map<std::string, std::string> environment;
    if (!failpoints.empty()) environment["ETCD_SYNC_FAILPOINTS"] = failpoints;
    env_->start_service(*service_, config, environment);
  }
  static std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

  PgClient& db() { return env_->db(); }
  EtcdTestClient& etcd() { return *env_->client; }

  std::int64_t insert_wal(const std::string& key, const std::optional<std::string>& value,
                          std::optional<std::int64_t> revision) {
    return env_->insert_wal(key, value, revision);
  }
  /// status, revision (or "NULL"), error_message of row `id` once it has left 'pending'.
  std::vector<std::string> settled(std::int64_t id, std::chrono::milliseconds deadline = 20s) {
    const auto query = "SELECT status, coalesce(revision::text, 'NULL'), coalesce(error_message, ''), retry_count::text "
                       "FROM etcd_wal WHERE id = " + std::to_string(id);
    wait_until([&] { return db().exec(query).at(0).at(0) != "pending"; }, deadline);
    auto row = db().exec(query).at(0);
    return {*row[0], *row[1], *row[2], *row[3]};
  }
  /// How many events of etcd's history put `value` on `key` (from revision 1).
  int times_written(const std::string& key, const std::string& value) {
    int n = 0;
    for (const auto& event : etcd().history(key, 1, etcd().revision()))
      if (event.key == key && event.value == value) ++n;
    return n;
  }
  /// Waits until etcd-sync has died of the kill failpoint, then clears the way for a restart.
  void expect_killed() {
    ASSERT_TRUE(service_->wait_exit(10s).has_value()) << "the failpoint did not fire";
    EXPECT_EQ(*service_->exit_code(), -SIGKILL);
  }

  std::unique_ptr<ServiceProcess> service_;
};

// Finding 1: etcd-sync dies right after its Txn landed, before the outcome is written; then
// another writer changes the key. The in-doubt check must still find the write (from the receipt)
// and record success at its revision, not a conflict.
TEST_F(OutboxFaultsTest, KilledAfterTheTxnLandedIsSuccessEvenIfTheKeyChangedSince) {
  auto settings = settings_for("/f1/", "postgres_to_etcd");
  start(settings, "outbox.after_txn=kill");
  auto id = insert_wal("/f1/k", "ours", std::nullopt);
  expect_killed();
  auto ours = etcd().get("/f1/k");
  ASSERT_TRUE(ours.has_value());
  ASSERT_EQ(ours->value(), "ours") << "the Txn should have landed before the kill";
  etcd().put("/f1/k", "theirs");
  EXPECT_EQ(db().scalar("SELECT status FROM etcd_wal WHERE id = " + std::to_string(id)), "pending");

  start(settings);
  auto row = settled(id);
  EXPECT_EQ(row[0], "success") << row[2];
  EXPECT_EQ(row[1], std::to_string(ours->mod_revision()));
  EXPECT_EQ(times_written("/f1/k", "ours"), 1);
  EXPECT_EQ(etcd().get("/f1/k")->value(), "theirs");
}

// Finding 2: the same under postgres_wins must not write the value a second time.
TEST_F(OutboxFaultsTest, KilledAfterTheTxnLandedUnderPostgresWinsIsNotWrittenTwice) {
  auto settings = settings_for("/f2/", "postgres_to_etcd");
  settings.conflict_resolution = "postgres_wins";
  start(settings, "outbox.after_txn=kill");
  auto first = insert_wal("/f2/k", "one", std::nullopt);
  expect_killed();
  etcd().put("/f2/k", "theirs");
  auto second = insert_wal("/f2/k", "two", std::nullopt);  // the next row of the key waits for the first
  start(settings);
  auto row = settled(first);
  EXPECT_EQ(row[0], "success") << row[2];
  EXPECT_EQ(settled(second)[0], "success");
  EXPECT_EQ(times_written("/f2/k", "one"), 1);
  EXPECT_EQ(times_written("/f2/k", "two"), 1);
  EXPECT_EQ(etcd().get("/f2/k")->value(), "two");
  // Rows of one key reached etcd in id order.
  EXPECT_LT(std::stoll(row[1]), std::stoll(settled(second)[1]));
}

// A crash between the claim (attempt recorded) and the Txn: nothing reached etcd, so the row is
// sent after the restart, once.
TEST_F(OutboxFaultsTest, KilledBeforeTheTxnWasSentAppliesTheRowOnce) {
  auto settings = settings_for("/f3/", "postgres_to_etcd");
  start(settings, "outbox.before_txn=kill");
  auto id = insert_wal("/f3/k", "v", std::nullopt);
  expect_killed();
  EXPECT_NE(db().scalar("SELECT attempt_revision FROM etcd_wal WHERE id = " + std::to_string(id)), std::nullopt)
      << "the claim records the attempt before the Txn";
  EXPECT_FALSE(etcd().get("/f3/k").has_value());
  start(settings);
  auto row = settled(id);
  EXPECT_EQ(row[0], "success") << row[2];
  EXPECT_EQ(times_written("/f3/k", "v"), 1);
}

// Finding 3: a delete that finds the key already gone is a success that deleted nothing: no
// revision (no delete of that key happened), and a note that says so. In both modes, also when
// the delete was in doubt.
TEST_F(OutboxFaultsTest, ADeleteThatFindsTheKeyGoneSucceedsWithoutARevision) {
  for (const char* mode : {"etcd_wins", "postgres_wins"}) {
    SCOPED_TRACE(mode);
    env_->fresh_database();
    auto settings = settings_for(std::string("/f4-") + mode + "/", "postgres_to_etcd");
    settings.conflict_resolution = mode;
    const std::string key = settings.prefix + "gone";
    start(settings, "outbox.after_txn=kill");
    auto id = insert_wal(key, std::nullopt, std::nullopt);
    expect_killed();
    start(settings);
    auto row = settled(id);
    EXPECT_EQ(row[0], "success") << row[2];
    EXPECT_EQ(row[1], "NULL");
    EXPECT_NE(row[2].find("nothing to delete"), std::string::npos) << row[2];
    // Not in doubt this time; and a delete that does remove the key has its delete's revision.
    auto again = insert_wal(key, std::nullopt, std::nullopt);
    row = settled(again);
    EXPECT_EQ(row[1], "NULL");
    auto put = etcd().put(key, "x");
    auto real = insert_wal(key, std::nullopt, put);
    row = settled(real);
    EXPECT_EQ(row[0], "success") << row[2];
    ASSERT_NE(row[1], "NULL");
    auto history = etcd().history(key, put, etcd().revision());
    ASSERT_EQ(history.size(), 2u);
    EXPECT_FALSE(history[1].value.has_value());
    EXPECT_EQ(row[1], std::to_string(history[1].revision));
    service_->terminate();
  }
}

// Finding 6: while etcd-sync is frozen with an outcome in memory, the row is replaced by another
// with the same id (as a lossy PostgreSQL promotion reissues ids). The outcome must not land on the
// new row; the new row is applied itself.
TEST_F(OutboxFaultsTest, AnOutcomeForAReplacedRowLandsNowhereAndTheNewRowIsApplied) {
  auto settings = settings_for("/f6/", "postgres_to_etcd");
  start(settings, "outbox.after_txn=stop");
  auto id = insert_wal("/f6/k", "lost", std::nullopt);
  ASSERT_TRUE(wait_until([&] {
    auto kv = etcd().get("/f6/k");
    return kv && kv->value() == "lost";
  }, 10s));
  ASSERT_TRUE(wait_until([&] { return service_->log_text().find("failpoint reached") != std::string::npos; }, 5s));
  const auto sid = std::to_string(id);
  const auto base = std::to_string(etcd().get("/f6/k")->mod_revision());  // the new row's writer saw "lost"
  db().exec("BEGIN; ALTER TABLE etcd_wal DISABLE TRIGGER etcd_wal_notify_insert; DELETE FROM etcd_wal WHERE id = " + sid +
            "; INSERT INTO etcd_wal (id, key, value, revision) VALUES (" + sid + ", '/f6/k', 'reissued', " + base +
            "); ALTER TABLE etcd_wal ENABLE TRIGGER etcd_wal_notify_insert; COMMIT");
  service_->signal(SIGCONT);
  auto row = settled(id);
  EXPECT_EQ(row[0], "success") << row[2];
  EXPECT_EQ(etcd().get("/f6/k")->value(), "reissued") << "the new row was never applied";
  EXPECT_EQ(times_written("/f6/k", "reissued"), 1);
  EXPECT_EQ(row[1], std::to_string(etcd().get("/f6/k")->mod_revision()));
  EXPECT_TRUE(service_->wait_for_log("etcd_wal outcome dropped", 5s));
}

// A frozen etcd makes Txns time out: their rows are in doubt, decided from the receipts when etcd
// answers again, each applied exactly once, none of their attempts spent.
TEST_F(OutboxFaultsTest, TxnsThatTimedOutAreDecidedFromReceiptsAndAppliedOnce) {
  auto settings = settings_for("/f8/", "postgres_to_etcd");
  settings.conflict_resolution = "postgres_wins";  // the second row of each key is based on nothing
  settings.request_timeout = "1s";
  settings.max_attempts = 2;
  start(settings);
  // The outbox runs once this instance leads: freezing etcd before that would time out the
  // election's calls instead of the outbox's Txns.
  ASSERT_TRUE(service_->wait_for_log("outbox barrier raised", 10s)) << service_->log_text();
  db().exec("INSERT INTO etcd_wal (key, value) SELECT '/f8/k' || i, 'v' || i FROM generate_series(1, 50) i");
  ::kill(env_->etcd.pid(), SIGSTOP);
  db().exec("INSERT INTO etcd_wal (key, value) SELECT '/f8/k' || i, 'w' || i FROM generate_series(1, 50) i");
  EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT outbox_state FROM etcd_sync_service") == "backing_off (etcd)"; }, 10s));
  ::kill(env_->etcd.pid(), SIGCONT);
  EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == "0"; }, 30s));
  EXPECT_EQ(db().scalar("SELECT string_agg(DISTINCT status || '/' || retry_count, ',') FROM etcd_wal"), "success/0");
  std::map<std::pair<std::string, std::string>, int> writes;
  for (const auto& event : etcd().history("/f8/", 1, etcd().revision()))
    if (event.value) ++writes[{event.key, *event.value}];
  for (int i = 1; i <= 50; ++i) {
    const std::string key = "/f8/k" + std::to_string(i);
    EXPECT_EQ((writes[{key, "v" + std::to_string(i)}]), 1) << key;
    EXPECT_EQ((writes[{key, "w" + std::to_string(i)}]), 1) << key;
    EXPECT_EQ(etcd().get(key)->value(), "w" + std::to_string(i)) << "rows of one key apply in id order";
  }
}

}  // namespace
}  // namespace etcd_sync::testing
