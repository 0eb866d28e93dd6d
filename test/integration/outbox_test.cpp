// PostgreSQL -> etcd end to end (README, "Tables" and "How it works"): rows written into etcd_wal reach real
// etcd once, in order, with compare-and-swap conflicts, retries, dead letters and requeue; the SQL
// helpers; no loops back through the mirror; crash safety of an attempt in doubt.
//
// One etcd and one PostgreSQL serve the whole suite. Each test gets a fresh database, writes its own
// config, runs its own etcd-sync, and keeps its etcd keys under its own prefix ("/t<N>/").

#include "reactor/outbox/claim_schedule.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "reactor/outbox/wal_txn.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

/// One etcd_wal row as the tests look at it.
struct WalState {
  std::string status;
  std::optional<std::int64_t> revision;
  std::optional<std::string> error_message;
  int retry_count = 0;
};

std::string contains_message(const std::optional<std::string>& text, const std::string& needle) {
  return "error_message \"" + text.value_or("<NULL>") + "\" should mention \"" + needle + "\"";
}

class OutboxTest : public SyncSuite {
 protected:
  void TearDown() override {
    if (service_ && service_->running()) service_->terminate();
    service_.reset();
  }

  /// Writes the config and starts (or restarts) this test's etcd-sync with it.
  std::filesystem::path start(const SyncSettings& settings) {
    auto config = env_->write_config(settings);
    if (service_ && service_->running()) {
      EXPECT_EQ(service_->terminate(), 0);
    }
    if (!service_) service_ = std::make_unique<ServiceProcess>(env_->dir.path(), test_name());
    env_->start_service(*service_, config);
    return config;
  }

  static std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

  PgClient& db() { return env_->db(); }
  EtcdTestClient& etcd() { return *env_->client; }

  /// INSERT INTO etcd_wal (key, value, revision) and the new id.
  std::int64_t insert_wal(const std::string& key, const std::optional<std::string>& value,
                          std::optional<std::int64_t> revision) {
    return env_->insert_wal(key, value, revision);
  }

  WalState wal(std::int64_t id) {
    auto rows = db().exec_params("SELECT status, revision, error_message, retry_count FROM etcd_wal WHERE id = $1",
                                 {std::to_string(id)});
    if (rows.empty()) return WalState{"<no such row>", std::nullopt, std::nullopt, 0};
    const auto& r = rows[0];
    return WalState{*r[0], r[1] ? std::optional(std::stoll(*r[1])) : std::nullopt, r[2], std::stoi(*r[3])};
  }

  /// Waits until the row has left 'pending' and returns it (still 'pending' at the deadline).
  WalState wait_processed(std::int64_t id, milliseconds deadline = 15s) {
    wait_until([&] { return wal(id).status != "pending"; }, deadline);
    return wal(id);
  }

  std::int64_t count(const std::string& sql, const std::vector<std::optional<std::string>>& params = {}) {
    return std::stoll(*db().exec_params(sql, params).at(0).at(0));
  }

  /// The key's value in etcd, or nullopt when absent.
  std::optional<std::string> etcd_value(const std::string& key) {
    auto kv = etcd().get(key);
    if (!kv) return std::nullopt;
    return kv->value();
  }

  std::unique_ptr<ServiceProcess> service_;
};

// Quickstart scenario 2: a NULL revision means "the key does not exist"; the put creates it.
TEST_F(OutboxTest, InsertWithNullRevisionPutsKey) {
  start(settings_for("/config/"));
  auto id = insert_wal("/config/app/debug", "true", std::nullopt);

  auto row = wait_processed(id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  auto kv = etcd().get("/config/app/debug");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value(), "true");
  EXPECT_EQ(row.revision, kv->mod_revision());
  EXPECT_EQ(row.retry_count, 0);
  EXPECT_EQ(row.error_message, std::nullopt);
}

// Quickstart scenario 3 with etcd_wins: a stale revision is a conflict, etcd keeps its value, and the
// resolved-conflict counter shows it in `etcd-sync status --format json`.
TEST_F(OutboxTest, StaleRevisionIsConflictWithEtcdWins) {
  auto config = start(settings_for("/t2/"));
  const std::string key = "/t2/config";
  auto a = etcd().put(key, "etcd-1");
  auto b = etcd().put(key, "etcd-2");
  ASSERT_LT(a, b);

  auto id = insert_wal(key, "from-postgres", a);
  auto row = wait_processed(id);
  ASSERT_EQ(row.status, "conflict");
  ASSERT_TRUE(row.error_message.has_value());
  EXPECT_NE(row.error_message->find(std::to_string(a)), std::string::npos) << contains_message(row.error_message, std::to_string(a));
  EXPECT_NE(row.error_message->find(std::to_string(b)), std::string::npos) << contains_message(row.error_message, std::to_string(b));
  auto kv = etcd().get(key);
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value(), "etcd-2");
  EXPECT_EQ(kv->mod_revision(), b);

  // The counter is written with the row's outcome.
  EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT conflicts_resolved FROM etcd_sync_service") == "1"; }, 5s))
      << "conflicts_resolved = " << db().scalar("SELECT conflicts_resolved FROM etcd_sync_service").value_or("NULL");
  auto status = run_binary({"status", "--format", "json", "-c", config.string()});
  ASSERT_EQ(status.exit_code, 0) << status.stderr_text;
  auto json = nlohmann::json::parse(status.stdout_text);
  EXPECT_GE(json["synchronization"]["conflicts_resolved"].get<std::int64_t>(), 1) << status.stdout_text;
  EXPECT_EQ(json["wal"]["conflict"].get<std::int64_t>(), 1) << status.stdout_text;
}

// The same stale insert with postgres_wins overwrites etcd.
TEST_F(OutboxTest, StaleRevisionOverwritesWithPostgresWins) {
  auto settings = settings_for("/t2b/");
  settings.conflict_resolution = "postgres_wins";
  start(settings);
  const std::string key = "/t2b/config";
  auto a = etcd().put(key, "etcd-1");
  auto b = etcd().put(key, "etcd-2");

  auto id = insert_wal(key, "from-postgres", a);
  auto row = wait_processed(id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  auto kv = etcd().get(key);
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value(), "from-postgres");
  EXPECT_GT(kv->mod_revision(), b);
  EXPECT_EQ(row.revision, kv->mod_revision());
}

// A 100 KB value and a binary one travel byte for byte; the NOTIFY payload never carries the value.
TEST_F(OutboxTest, LargeAndBinaryValuesArriveByteForByte) {
  start(settings_for("/t3/"));
  std::string large;
  large.reserve(100 * 1024);
  for (std::size_t i = 0; large.size() < 100 * 1024; ++i) large += static_cast<char>('a' + i % 26);
  auto large_id = insert_wal("/t3/large", large, std::nullopt);
  auto binary_id = std::stoll(*db().scalar(
      "INSERT INTO etcd_wal (key, value, value_bytes) VALUES ('/t3/binary', NULL, decode('00ff41', 'hex')) RETURNING id"));
  // Every byte value, NUL and 0xff included.
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
  auto all_id = std::stoll(*db().scalar(
      "INSERT INTO etcd_wal (key, value_bytes) SELECT '/t3/all-bytes', string_agg(set_byte('\\x00'::bytea, 0, i), ''::bytea "
      "ORDER BY i) FROM generate_series(0, 255) i RETURNING id"));

  for (std::int64_t id : {large_id, std::int64_t{binary_id}, std::int64_t{all_id}}) {
    auto row = wait_processed(id);
    EXPECT_EQ(row.status, "success") << "row " << id << ": " << row.error_message.value_or("");
  }
  auto large_kv = etcd().get("/t3/large");
  ASSERT_TRUE(large_kv.has_value());
  EXPECT_EQ(large_kv->value().size(), large.size());
  EXPECT_TRUE(large_kv->value() == large) << "the 100 KB value differs";
  EXPECT_EQ(etcd_value("/t3/binary"), std::string("\x00\xff\x41", 3));
  EXPECT_EQ(etcd_value("/t3/all-bytes"), all_bytes);
}

// value NULL and value_bytes NULL mean delete.
TEST_F(OutboxTest, NullValueDeletesKey) {
  start(settings_for("/t4/"));
  const std::string key = "/t4/gone";
  auto put_revision = etcd().put(key, "here");

  auto id = insert_wal(key, std::nullopt, put_revision);
  auto row = wait_processed(id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  EXPECT_EQ(etcd().get(key), std::nullopt);
  ASSERT_TRUE(row.revision.has_value());
  EXPECT_GT(*row.revision, put_revision);
  EXPECT_EQ(*row.revision, etcd().revision()) << "the delete is etcd's latest revision";
}

// 1000 updates to one key, inserted in one statement, apply in id order.
TEST_F(OutboxTest, ThousandUpdatesToOneKeyApplyInOrder) {
  auto settings = settings_for("/t5/");
  settings.conflict_resolution = "postgres_wins";
  start(settings);
  const std::string key = "/t5/counter";
  db().exec_params("INSERT INTO etcd_wal (key, value, revision) SELECT $1, 'v' || i, NULL FROM generate_series(1, 1000) i",
                   {key});

  EXPECT_TRUE(wait_until([&] { return count("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == 0; }, 40s));
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal WHERE status = 'success'"), 1000);
  EXPECT_EQ(count("SELECT count(*) FROM (SELECT revision, lag(revision) OVER (ORDER BY id) AS previous FROM etcd_wal) s "
                  "WHERE previous IS NOT NULL AND revision <= previous"),
            0)
      << "revisions must increase strictly in id order";
  EXPECT_EQ(db().scalar("SELECT value FROM etcd_wal ORDER BY revision DESC LIMIT 1"), "v1000");
  auto kv = etcd().get(key);
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value(), "v1000");
  EXPECT_EQ(std::to_string(kv->mod_revision()), db().scalar("SELECT max(revision) FROM etcd_wal"));
  EXPECT_EQ(kv->version(), 1000);
}

// An etcd outage is not an error of the rows: rows inserted while etcd is down for 10 s wait (the
// outbox backs off as a whole, naming etcd) and are applied when it is back, with max_attempts = 3
// and none of their attempts spent. `sync --force` requeues failed rows for the running service.
TEST_F(OutboxTest, EtcdOutageOfTenSecondsSpendsNoAttemptAndRowsApplyWhenItEnds) {
  auto settings = settings_for("/t6/");
  settings.max_attempts = 3;
  settings.initial_backoff = "200ms";
  settings.max_backoff = "1s";
  settings.request_timeout = "1s";
  auto config = start(settings);

  env_->etcd.stop();
  const auto down_at = std::chrono::steady_clock::now();
  auto first = insert_wal("/t6/a", "1", std::nullopt);
  auto second = insert_wal("/t6/b", "2", std::nullopt);
  EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT outbox_state FROM etcd_sync_service") == "backing_off (etcd)"; }, 10s))
      << "status shows the outbox as " << db().scalar("SELECT outbox_state FROM etcd_sync_service").value_or("NULL");
  std::this_thread::sleep_until(down_at + 10s);  // the outage itself: 10 s of etcd down
  EXPECT_EQ(wal(first).status, "pending");
  EXPECT_EQ(wal(second).status, "pending");
  env_->etcd.start();

  for (auto id : {first, second}) {
    auto row = wait_processed(id, 20s);
    EXPECT_EQ(row.status, "success") << "row " << id << ": " << row.error_message.value_or("");
    EXPECT_EQ(row.retry_count, 0) << "an outage spent an attempt of row " << id;
  }
  EXPECT_EQ(etcd_value("/t6/a"), "1");
  EXPECT_EQ(etcd_value("/t6/b"), "2");
  EXPECT_EQ(wal(first).revision, etcd().get("/t6/a")->mod_revision());
  EXPECT_EQ(etcd().get("/t6/a")->version(), 1) << "written once";

  // A failed row stays failed until requeued; `sync --force` sends it again at once.
  auto doomed = insert_wal("/t6/doomed", "late", std::nullopt);
  ASSERT_EQ(wait_processed(doomed).status, "success");
  db().exec_params("UPDATE etcd_wal SET status = 'failed', revision = NULL, error_message = 'by hand' WHERE id = $1",
                   {std::to_string(doomed)});
  etcd().del("/t6/doomed");
  auto requeue = run_binary({"sync", "--force", "-c", config.string()});
  EXPECT_EQ(requeue.exit_code, 0) << requeue.stderr_text;
  EXPECT_NE(requeue.stdout_text.find("requeued 1"), std::string::npos) << requeue.stdout_text;
  auto row = wait_processed(doomed, 20s);
  EXPECT_EQ(row.status, "success") << row.error_message.value_or("");
  EXPECT_EQ(etcd_value("/t6/doomed"), "late");
}

// A value larger than etcd accepts fails at once, naming etcd's request limit (not after
// max_attempts retries of gRPC's "received message larger than max").
TEST_F(OutboxTest, ValueLargerThanEtcdAcceptsFailsAtOnceNamingTheLimit) {
  auto settings = settings_for("/big/");
  settings.max_attempts = 3;
  start(settings);
  auto id = insert_wal("/big/huge", std::string(2 * 1024 * 1024, 'x'), std::nullopt);
  auto ok = insert_wal("/big/small", "fine", std::nullopt);
  auto row = wait_processed(id);
  EXPECT_EQ(row.status, "failed");
  EXPECT_NE(row.error_message.value_or("").find("--max-request-bytes"), std::string::npos)
      << contains_message(row.error_message, "--max-request-bytes");
  EXPECT_EQ(row.retry_count, 0) << "a permanent refusal is not retried";
  EXPECT_EQ(etcd_value("/big/huge"), std::nullopt);
  EXPECT_EQ(wait_processed(ok).status, "success") << "the row beside it is not held back";
}

TEST_F(OutboxTest, KeyOutsidePrefixAndEmptyKeyFail) {
  start(settings_for("/t7/"));
  auto outside = insert_wal("/elsewhere/x", "v", std::nullopt);
  auto empty = insert_wal("", "v", std::nullopt);
  auto inside = insert_wal("/t7/ok", "v", std::nullopt);

  auto row = wait_processed(outside);
  EXPECT_EQ(row.status, "failed");
  EXPECT_EQ(row.retry_count, 0);
  EXPECT_NE(row.error_message.value_or("").find("/t7/"), std::string::npos) << contains_message(row.error_message, "/t7/");
  EXPECT_EQ(etcd().get("/elsewhere/x"), std::nullopt);

  row = wait_processed(empty);
  EXPECT_EQ(row.status, "failed");
  EXPECT_EQ(row.retry_count, 0);
  EXPECT_NE(row.error_message.value_or("").find("empty key"), std::string::npos)
      << contains_message(row.error_message, "empty key");

  EXPECT_EQ(wait_processed(inside).status, "success") << "rejected rows do not hold up the others";
}

// etcd_get / etcd_set / etcd_delete / etcd_get_all against the mirror.
TEST_F(OutboxTest, SqlHelpers) {
  start(settings_for("/t8/"));
  const std::string key = "/t8/helper";
  auto r1 = etcd().put(key, "v1");
  ASSERT_TRUE(wait_until([&] { return db().exec_params("SELECT revision FROM etcd_get($1)", {key}).size() == 1; }, 10s));
  auto got = db().exec_params("SELECT key, value, value_bytes, revision FROM etcd_get($1)", {key});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], (PgClient::Row{key, "v1", std::nullopt, std::to_string(r1)}));

  // etcd_set bases the change on the mirrored revision.
  // The queued row is read before COMMIT: once the outbox has applied it, `revision` holds the result.
  auto queue = [&](const std::string& call) {
    db().exec("BEGIN");
    auto id = *db().exec_params("SELECT " + call, {key}).at(0).at(0);
    auto row = db().exec_params("SELECT id, revision, value FROM etcd_wal WHERE id = $1", {id}).at(0);
    db().exec("COMMIT");
    return row;
  };
  auto queued = queue("etcd_set($1, 'new')");
  auto set_id = std::stoll(*queued[0]);
  EXPECT_EQ(queued[1], std::to_string(r1));
  EXPECT_EQ(queued[2], "new");
  auto row = wait_processed(set_id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  ASSERT_TRUE(row.revision.has_value());
  const auto r2 = *row.revision;
  EXPECT_EQ(etcd_value(key), "new");

  // Once the mirror shows r2, etcd_delete bases the delete on it.
  ASSERT_TRUE(wait_until(
      [&] { return db().exec_params("SELECT revision FROM etcd_get($1)", {key}) == PgClient::Rows{{std::to_string(r2)}}; },
      10s));
  queued = queue("etcd_delete($1)");
  auto delete_id = std::stoll(*queued[0]);
  EXPECT_EQ(queued[1], std::to_string(r2));
  EXPECT_EQ(queued[2], std::nullopt);
  row = wait_processed(delete_id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  ASSERT_TRUE(row.revision.has_value());
  const auto r3 = *row.revision;
  EXPECT_EQ(etcd().get(key), std::nullopt);

  // The history, oldest first, tombstone included; etcd_get shows nothing once the key is deleted.
  const PgClient::Rows history{{"v1", std::to_string(r1), "f"}, {"new", std::to_string(r2), "f"},
                               {std::nullopt, std::to_string(r3), "t"}};
  auto read_history = [&] {
    return db().exec_params("SELECT value, revision, tombstone FROM etcd_get_all($1, 0)", {key});
  };
  EXPECT_TRUE(wait_until([&] { return read_history().size() == 3; }, 10s));
  EXPECT_EQ(read_history(), history);
  EXPECT_EQ(db().exec_params("SELECT revision FROM etcd_get_all($1, $2)", {key, std::to_string(r2)}),
            (PgClient::Rows{{std::to_string(r2)}, {std::to_string(r3)}}));
  EXPECT_TRUE(db().exec_params("SELECT * FROM etcd_get($1)", {key}).empty());

  // etcd_set on a deleted key bases the put on "absent" and succeeds.
  queued = queue("etcd_set($1, 'back')");
  auto again_id = std::stoll(*queued[0]);
  EXPECT_EQ(queued[1], std::nullopt);
  row = wait_processed(again_id);
  EXPECT_EQ(row.status, "success") << row.error_message.value_or("");
  EXPECT_EQ(etcd_value(key), "back");
}

// Rows of different keys claimed together share one Txn (one etcd revision). With etcd_wins a stale
// row among them is a conflict on its own and the others are sent again without it; with
// postgres_wins all are written and each stale base counts as a resolved conflict.
TEST_F(OutboxTest, RowsOfOneBatchShareATxnAndConflictsAreDecidedPerRow) {
  for (std::string resolution : {"etcd_wins", "postgres_wins"}) {
    SCOPED_TRACE(resolution);
    auto settings = settings_for("/tg/");
    settings.conflict_resolution = resolution;
    start(settings);
    db().exec("TRUNCATE etcd_wal; UPDATE etcd_sync_service SET conflicts_resolved = 0");
    const std::string stale_key = "/tg/" + resolution + "/stale";
    auto stale_base = etcd().put(stale_key, "etcd-1");
    etcd().put(stale_key, "etcd-2");
    const std::string based_key = "/tg/" + resolution + "/based";
    auto base = etcd().put(based_key, "old");
    // 40 rows in one INSERT: one commit, so the outbox claims them in one batch.
    db().exec_params(
        "INSERT INTO etcd_wal (key, value, revision) "
        "SELECT $1 || i, 'v' || i, NULL FROM generate_series(1, 38) i "
        "UNION ALL SELECT $2, 'from-postgres', $3::bigint "
        "UNION ALL SELECT $4, 'new', $5::bigint",
        {"/tg/" + resolution + "/k", stale_key, std::to_string(stale_base), based_key, std::to_string(base)});
    ASSERT_TRUE(wait_until([&] { return count("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == 0; }, 15s));

    auto stale = db().exec_params("SELECT status, revision FROM etcd_wal WHERE key = $1", {stale_key}).at(0);
    auto others = db().exec("SELECT count(*), count(DISTINCT revision), min(status), max(status) FROM etcd_wal "
                            "WHERE key <> '" + stale_key + "'").at(0);
    if (resolution == "etcd_wins") {
      EXPECT_EQ(stale[0], "conflict");
      EXPECT_EQ(etcd_value(stale_key), "etcd-2");
      EXPECT_EQ(others, (PgClient::Row{"39", "1", "success", "success"})) << "the 39 others: one Txn after the conflict";
      EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT conflicts_resolved FROM etcd_sync_service") == "1"; }, 5s));
    } else {
      EXPECT_EQ(stale[0], "success");
      EXPECT_EQ(etcd_value(stale_key), "from-postgres");
      EXPECT_EQ(others, (PgClient::Row{"39", "1", "success", "success"}));
      EXPECT_EQ(stale[1], db().scalar("SELECT max(revision)::text FROM etcd_wal")) << "the same Txn as the others";
      EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT conflicts_resolved FROM etcd_sync_service") == "1"; }, 5s))
          << "only the stale row counts: " << db().scalar("SELECT conflicts_resolved FROM etcd_sync_service").value_or("NULL");
    }
    EXPECT_EQ(etcd_value(based_key), "new");
    EXPECT_EQ(etcd_value("/tg/" + resolution + "/k38"), "v38");
  }
}

// An etcd that refuses a Txn of many rows (here --max-txn-ops=4, below the default the groups are
// sized for) still gets every row, one Txn each.
TEST_F(OutboxTest, RowsEtcdRefusesAsAGroupAreAppliedOneByOne) {
  EtcdServer strict(env_->dir.path(), "etcd-max-txn-ops");
  strict.add_arguments({"--max-txn-ops=4"});
  strict.start();
  auto config = env_->write_config(settings_for("/ops/"));
  ServiceProcess service(env_->dir.path(), "max-txn-ops");
  service.start({"start", "-c", config.string(), "-e", "etcd://" + strict.endpoint() + "/ops/"});
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 20s)) << service.log_text();

  db().exec("INSERT INTO etcd_wal (key, value) SELECT '/ops/k' || i, 'v' || i FROM generate_series(1, 10) i");
  EXPECT_TRUE(wait_until([&] { return count("SELECT count(*) FROM etcd_wal WHERE status = 'success'") == 10; }, 15s))
      << db().scalar("SELECT string_agg(status || ': ' || coalesce(error_message, ''), '; ') FROM etcd_wal").value_or("");
  EXPECT_EQ(count("SELECT count(DISTINCT revision) FROM etcd_wal"), 10) << "one Txn per row";
  EXPECT_EQ(strict.etcdctl({"get", "/ops/k7", "--print-value-only"}), "v7\n");
  EXPECT_EQ(service.terminate(5s), 0);
}

// Claims scan pending rows from a floor that the NOTIFY payloads lower: a row whose transaction got
// its id first but committed last, and a row announced by a NOTIFY without an id, still go at once
// (the 30 s sweep cannot be what delivers them).
TEST_F(OutboxTest, RowsCommittedOutOfIdOrderOrNotifiedWithoutAnIdApplyAtOnce) {
  auto settings = settings_for("/floor/");
  settings.sync_interval = "30s";
  start(settings);
  PgClient late(env_->conninfo());
  late.exec("BEGIN");
  auto low_id = std::stoll(*late.exec("INSERT INTO etcd_wal (key, value) VALUES ('/floor/low', 'l') RETURNING id").at(0).at(0));
  auto high_id = insert_wal("/floor/high", "h", std::nullopt);
  ASSERT_GT(high_id, low_id);
  ASSERT_EQ(wait_processed(high_id, 5s).status, "success");
  late.exec("COMMIT");
  EXPECT_EQ(wait_processed(low_id, 5s).status, "success") << "the lower id committed later was not claimed";
  EXPECT_EQ(etcd_value("/floor/low"), "l");

  db().exec("ALTER TABLE etcd_wal DISABLE TRIGGER etcd_wal_notify_insert");
  auto silent_id = insert_wal("/floor/silent", "s", std::nullopt);
  db().exec("ALTER TABLE etcd_wal ENABLE TRIGGER etcd_wal_notify_insert");
  db().exec("NOTIFY etcd_changes");
  EXPECT_EQ(wait_processed(silent_id, 5s).status, "success") << "a NOTIFY without an id did not start a full scan";
}

// A burst of more rows than the claims may hold unwritten (ClaimSchedule::kBatchesInFlight
// batches): once the outcomes free room the loop claims again at once, not at the next sweep.
// (It once waited out sync_interval whenever it stopped for room: 635 rows/s in perf (c).)
TEST_F(OutboxTest, BurstLargerThanTheClaimsMayHoldAppliesWithoutWaitingForTheSweep) {
  auto settings = settings_for("/burst/");
  settings.sync_interval = "60s";  // the sweep cannot be what delivers the rows
  start(settings);
  const int rows = 10 * ClaimSchedule::kBatchesInFlight * settings.batch_size;
  db().exec_params("INSERT INTO etcd_wal (key, value) SELECT '/burst/' || i, 'v' FROM generate_series(1, $1::int) i",
                   {std::to_string(rows)});
  const std::string pending = "SELECT count(*) FROM etcd_wal WHERE status = 'pending' AND starts_with(key, '/burst/')";
  EXPECT_TRUE(wait_until([&] { return count(pending) == 0; }, 30s))
      << count(pending) << " of " << rows << " rows still pending";
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal WHERE status = 'success' AND starts_with(key, '/burst/')"), rows);
}

// A claim's UPDATE changes no indexed column, and etcd_wal's pages are filled to half
// (schema/008_outbox_fillfactor.sql), so claims are heap-only tuple updates: no new index entries.
// (At fillfactor 100, 9% of them were.) The outcome's UPDATE changes status and never is.
TEST_F(OutboxTest, ClaimsUpdateRowsInPlace) {
  start(settings_for("/hot/"));
  const std::string stats = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'etcd_wal'::regclass";
  auto read_stats = [&] {
    auto row = db().exec(stats).at(0);
    return std::pair{std::stoll(row.at(0).value_or("0")), std::stoll(row.at(1).value_or("0"))};
  };
  const auto [updates_before, hot_before] = read_stats();
  const int rows = 2000;
  db().exec_params("INSERT INTO etcd_wal (key, value) SELECT '/hot/' || i, repeat('v', 100) FROM generate_series(1, $1::int) i",
                   {std::to_string(rows)});
  const std::string pending = "SELECT count(*) FROM etcd_wal WHERE status = 'pending' AND starts_with(key, '/hot/')";
  ASSERT_TRUE(wait_until([&] { return count(pending) == 0; }, 30s)) << count(pending) << " rows still pending";
  // A session reports its counts at the end of a transaction at most once a second, else after
  // 10 s idle, and always when it exits (PostgreSQL 15, pgstat.c; pg_stat_force_next_flush()
  // reaches only the calling session). So the outbox's sessions end: once etcd-sync has stopped,
  // every claim and outcome of the rows is counted as soon as their backends have exited, and the
  // target below stays where it is while the test waits for it.
  ASSERT_EQ(service_->terminate(5s), 0);
  const std::int64_t updates_expected = 2 * rows;  // a claim and an outcome per row
  std::pair<std::int64_t, std::int64_t> now;
  EXPECT_TRUE(wait_until(
      [&] {
        now = read_stats();
        return now.first - updates_before >= updates_expected;
      },
      10s, 50ms))
      << now.first - updates_before << " updates counted of " << updates_expected;
  EXPECT_GE(now.second - hot_before, rows * 8 / 10) << "of " << now.first - updates_before << " updates";
}

// etcd_wal analyzed while nothing was pending (as autovacuum does in a quiet hour), then a large
// INSERT: PostgreSQL's planner believes the pending rows' indexes empty and would walk them whole
// for every key a claim looks up. The outbox sees its estimate is stale, runs ANALYZE etcd_wal, and
// the rows drain.
TEST_F(OutboxTest, BurstIntoATableAnalyzedWhileIdleIsAnalyzedAndDrains) {
  start(settings_for("/stale/"));
  db().exec("ALTER TABLE etcd_wal SET (autovacuum_enabled = false)");  // no ANALYZE but the outbox's
  db().exec("INSERT INTO etcd_wal (key, value, status, applied_at) "
            "SELECT '/stale/old/' || i, 'v', 'success', now() FROM generate_series(1, 20000) i");
  db().exec("ANALYZE etcd_wal");
  const int rows = 5000;
  db().exec_params("INSERT INTO etcd_wal (key, value) SELECT '/stale/new/' || i, 'v' FROM generate_series(1, $1::int) i",
                   {std::to_string(rows)});
  EXPECT_TRUE(service_->wait_for_log("analyzed etcd_wal", 30s)) << service_->log_since_mark();
  const std::string pending = "SELECT count(*) FROM etcd_wal WHERE status = 'pending'";
  EXPECT_TRUE(wait_until([&] { return count(pending) == 0; }, 60s)) << count(pending) << " rows still pending";
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal WHERE status = 'success' AND starts_with(key, '/stale/new/')"), rows);
}

// The outbox's PostgreSQL sessions (claims, outcome writes) are killed while rows flow: every row
// still ends 'success', and reaches etcd exactly once.
TEST_F(OutboxTest, KilledOutboxSessionsLoseNoRowAndRepeatNoWrite) {
  start(settings_for("/kill/"));
  PgClient admin(env_->conninfo());
  for (int round = 0; round < 30; ++round) {
    db().exec("INSERT INTO etcd_wal (key, value) SELECT '/kill/' || " + std::to_string(round) +
              " || '-' || i, 'v' FROM generate_series(1, 10) i");
    if (round % 5 == 2 || round % 5 == 4) {
      // The outcome session opens with the first outcome write: wait for it, so there is one to kill.
      const std::string session = round % 5 == 2 ? "etcd-sync outbox outcomes" : "etcd-sync outbox";
      ASSERT_TRUE(wait_until([&] {
        return admin.exec_params("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {session})
                   .at(0).at(0) == "1";
      }, 10s)) << "no session named " << session;
      admin.exec_params("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", {session});
    }
  }
  EXPECT_TRUE(wait_until([&] { return count("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == 0; }, 30s))
      << count("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") << " rows still pending";
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal WHERE status = 'success'"), 300)
      << db().scalar("SELECT string_agg(DISTINCT status || ': ' || coalesce(error_message, ''), '; ') FROM etcd_wal").value_or("");
  int written_twice = 0;
  for (const auto& row : db().exec("SELECT key FROM etcd_wal")) {
    auto kv = etcd().get(*row[0]);
    if (!kv || kv->version() != 1) ++written_twice;
  }
  EXPECT_EQ(written_twice, 0) << "keys missing or written more than once";
  const auto log = service_->log_text();
  EXPECT_NE(log.find("\"component\":\"outbox outcomes\",\"from\":\"writing\",\"to\":\"backing_off\""), std::string::npos)
      << "the test never made an outcome write fail";
}

// A write through etcd_wal comes back through the watch into `etcd` once, never into etcd_wal.
TEST_F(OutboxTest, NoLoopBackIntoWal) {
  start(settings_for("/t9/"));
  const std::string key = "/t9/loop";
  auto id = insert_wal(key, "once", std::nullopt);
  auto row = wait_processed(id);
  ASSERT_EQ(row.status, "success") << row.error_message.value_or("");
  ASSERT_TRUE(row.revision.has_value());

  // A later etcd write under the prefix, mirrored, proves the mirror has gone past the wal write.
  auto marker = etcd().put("/t9/marker", "m");
  ASSERT_TRUE(env_->wait_mirrored(marker, 10s, "/t9/")) << "checkpoint " << env_->checkpoint("/t9/");
  EXPECT_EQ(db().exec_params("SELECT value, revision, tombstone FROM etcd WHERE key = $1", {key}),
            (PgClient::Rows{{"once", std::to_string(*row.revision), "f"}}));
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM etcd_wal WHERE key = '/t9/marker'"), 0);
}

// COMMIT to visible in etcd, with the service idle: milliseconds (NOTIFY, not the 5 s sweep).
TEST_F(OutboxTest, CommitToEtcdLatency) {
  auto settings = settings_for("/t10/");
  settings.sync_interval = "30s";  // the sweep cannot be what delivers the rows
  settings.log_level = "info";
  start(settings);
  // Warm up connections on both sides.
  auto warm = insert_wal("/t10/warm", "w", std::nullopt);
  ASSERT_EQ(wait_processed(warm).status, "success");

  std::vector<double> samples;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "/t10/k" + std::to_string(i);
    auto started = std::chrono::steady_clock::now();
    insert_wal(key, "v", std::nullopt);  // autocommit: returns after COMMIT
    bool seen = wait_until([&] { return etcd().get(key).has_value(); }, 5s, 1ms);
    auto elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    ASSERT_TRUE(seen) << key << " did not reach etcd";
    samples.push_back(elapsed);
  }
  std::sort(samples.begin(), samples.end());
  double median = samples[samples.size() / 2];
  double worst = samples.back();
  std::cout << "[ latency  ] COMMIT -> visible in etcd over " << samples.size() << " rows: min " << samples.front()
            << " ms, median " << median << " ms, max " << worst << " ms" << std::endl;
  RecordProperty("latency_median_ms", std::to_string(median));
  RecordProperty("latency_max_ms", std::to_string(worst));
  EXPECT_LT(worst, 1000.0);
}

// Rows in doubt (an attempt recorded, its outcome never written back) are decided from the
// outbox's receipts in etcd, never from the keys' current values, and never applied twice.
TEST_F(OutboxTest, InDoubtRowsAreDecidedFromReceipts) {
  auto settings = settings_for("/t11/");
  auto config = env_->write_config(settings);
  auto migrate = run_binary({"migrate", "-c", config.string()});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.stdout_text << migrate.stderr_text;

  auto insert = [&](const std::string& key, const std::string& value, std::optional<std::int64_t> revision,
                    std::int64_t attempt_revision) {
    auto rows = db().exec_params(
        "INSERT INTO etcd_wal (key, value, revision, attempt_revision) VALUES ($1, $2, $3::bigint, $4::bigint) "
        "RETURNING id",
        {key, value, revision ? std::optional(std::to_string(*revision)) : std::nullopt, std::to_string(attempt_revision)});
    return std::stoll(*rows.at(0).at(0));
  };
  const auto keys = outbox_keys("/etcd-sync/election/");

  // Applied before the crash: its Txn wrote the value and the receipt. Since then another writer
  // changed the key, so its current value says nothing about the row.
  const std::string done_key = "/t11/done";
  auto since = etcd().revision();
  auto done_id = insert(done_key, "x", std::nullopt, since);
  WalRow done;
  done.id = done_id;
  done.key = done_key;
  done.value = "x";
  const auto applied_at = etcd().txn_puts({{done_key, "x"}, {keys.receipt, receipt_value({&done})}});
  etcd().put(done_key, "someone else");

  // Never applied: the same value was written by someone else, with no receipt for the row.
  const std::string undone_key = "/t11/undone";
  auto undone_id = insert(undone_key, "y", std::nullopt, etcd().revision());
  // A plain conflict in the very first batch of a fresh database still counts as resolved.
  const std::string conflict_key = "/t11/conflict";
  auto stale = etcd().put(conflict_key, "c1");
  etcd().put(conflict_key, "c2");
  auto conflict_id = insert_wal(conflict_key, "p", stale);

  start(settings);
  auto row = wait_processed(done_id);
  EXPECT_EQ(row.status, "success") << row.error_message.value_or("");
  EXPECT_EQ(row.revision, applied_at);
  EXPECT_EQ(etcd_value(done_key), "someone else") << "the row was applied again";
  EXPECT_EQ(etcd().get(done_key)->version(), 2);

  row = wait_processed(undone_id);
  EXPECT_EQ(row.status, "success") << row.error_message.value_or("");
  auto kv = etcd().get(undone_key);
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value(), "y");
  EXPECT_EQ(row.revision, kv->mod_revision());

  EXPECT_EQ(wait_processed(conflict_id).status, "conflict");
  EXPECT_EQ(etcd_value(conflict_key), "c2");
  EXPECT_TRUE(wait_until([&] { return db().scalar("SELECT conflicts_resolved FROM etcd_sync_service") == "1"; }, 5s))
      << "conflicts_resolved = " << db().scalar("SELECT conflicts_resolved FROM etcd_sync_service").value_or("NULL");
}

// When the history that would tell was compacted, the outcome is reported unknown (failed, saying
// so) and the row is not sent again.
TEST_F(OutboxTest, InDoubtRowWhoseReceiptsWereCompactedIsUnknownAndNotSentAgain) {
  auto settings = settings_for("/t12/");
  auto config = env_->write_config(settings);
  ASSERT_EQ(run_binary({"migrate", "-c", config.string()}).exit_code, 0);
  auto since = etcd().revision();
  auto id = std::stoll(*db().exec_params("INSERT INTO etcd_wal (key, value, attempt_revision) VALUES ($1, $2, $3::bigint) RETURNING id",
                                         {"/t12/k", "v", std::to_string(since)}).at(0).at(0));
  etcd().put("/t12/other", "1");
  etcd().put("/t12/other", "2");
  etcd().compact(etcd().revision());
  start(settings);
  auto row = wait_processed(id);
  EXPECT_EQ(row.status, "failed");
  EXPECT_NE(row.error_message.value_or("").find("outcome unknown"), std::string::npos)
      << contains_message(row.error_message, "outcome unknown");
  EXPECT_EQ(etcd_value("/t12/k"), std::nullopt) << "an unknown outcome must not be sent again";
}

}  // namespace
}  // namespace etcd_sync::testing
