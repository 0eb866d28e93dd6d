// etcd -> PostgreSQL against real servers: snapshot, watch, restarts, crashes, compaction, bad data.

#include "test/support/sync_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <thread>
#include <tuple>

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

class MirrorTest : public SyncSuite {
 protected:
  SyncSettings settings(const std::string& prefix) { return settings_for(prefix, "etcd_to_postgres"); }

  /// Every row under `prefix` equals etcd's history from `from` to etcd's current revision.
  void expect_history(const std::string& prefix, std::int64_t from) {
    auto now = env_->client->revision();
    ASSERT_TRUE(env_->wait_mirrored(now, 30s, prefix)) << "checkpoint " << env_->checkpoint(prefix) << " < " << now;
    auto want = env_->client->history(prefix, from, now);
    auto got = env_->mirror_rows(prefix);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].key, want[i].key) << "at " << i;
      ASSERT_EQ(got[i].revision, want[i].revision) << "at " << i;
      ASSERT_EQ(got[i].value, want[i].value) << "at " << i << " key " << want[i].key;
    }
  }

  /// `txns` Txns of 128 puts each (etcd's default --max-txn-ops), one after the other: keys
  /// `key_prefix` + 0, 1, 2, ..., each with `value`.
  void put_txns_of_128(const std::string& key_prefix, int txns, const std::string& value) {
    for (int t = 0; t < txns; ++t) {
      std::vector<std::pair<std::string, std::string>> txn;
      for (int i = 0; i < 128; ++i) txn.emplace_back(key_prefix + std::to_string(t * 128 + i), value);
      env_->client->txn_puts(txn);
    }
  }

  /// `got` holds exactly `want`'s events, compared in (revision, key) order: the puts of one Txn
  /// share a revision, and etcd's history lists them in the Txn's order.
  static void expect_same_events(std::vector<HistoryEntry> want, std::vector<HistoryEntry> got) {
    auto by_revision_then_key = [](const HistoryEntry& a, const HistoryEntry& b) {
      return std::tie(a.revision, a.key) < std::tie(b.revision, b.key);
    };
    std::sort(want.begin(), want.end(), by_revision_then_key);
    std::sort(got.begin(), got.end(), by_revision_then_key);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "at " << i;
  }
};

TEST_F(MirrorTest, QuickstartScenarioOneThreePutsAppearWithTheirRevisions) {
  ServiceProcess service(env_->dir.path(), "scenario1");
  env_->start_service(service, env_->write_config(settings("/config/")));
  auto r1 = env_->client->put("/config/app/timeout", "30s");
  auto r2 = env_->client->put("/config/app/retries", "3");
  auto r3 = env_->client->put("/config/db/host", "localhost");
  ASSERT_TRUE(env_->wait_mirrored(r3, 10s, "/config/"));
  auto rows = env_->mirror_rows("/config/");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (HistoryEntry{"/config/app/timeout", "30s", r1}));
  EXPECT_EQ(rows[1], (HistoryEntry{"/config/app/retries", "3", r2}));
  EXPECT_EQ(rows[2], (HistoryEntry{"/config/db/host", "localhost", r3}));
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, DeletesBecomeTombstonesAtTheDeleteRevision) {
  ServiceProcess service(env_->dir.path(), "tombstones");
  env_->start_service(service, env_->write_config(settings("/del/")));
  auto put = env_->client->put("/del/a", "1");
  auto del = env_->client->del("/del/a");
  ASSERT_TRUE(env_->wait_mirrored(del, 10s, "/del/"));
  auto rows = env_->db().exec_params(
      "SELECT revision, tombstone, value IS NULL AND value_bytes IS NULL FROM etcd WHERE key = $1 ORDER BY revision",
      {"/del/a"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(std::stoll(*rows[0][0]), put);
  EXPECT_EQ(*rows[0][1], "f");
  EXPECT_EQ(std::stoll(*rows[1][0]), del);
  EXPECT_EQ(*rows[1][1], "t");
  EXPECT_EQ(*rows[1][2], "t");
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, ChangesWhileStoppedArriveWithTheirOwnRevisionsAfterRestart) {
  auto config = env_->write_config(settings("/offline/"));
  auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "offline");
  env_->start_service(service, config);
  env_->client->put("/offline/a", "1");
  env_->client->put("/offline/b", "1");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 10s, "/offline/"));
  ASSERT_EQ(service.terminate(5s), 0);

  env_->client->put("/offline/a", "2");    // update
  env_->client->del("/offline/b");         // delete
  env_->client->put("/offline/c", "new");  // create
  env_->client->put("/offline/test/offline", "offline-change");
  env_->start_service(service, config);
  expect_history("/offline/", first);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, KillNineDuringTenThousandPutsLosesAndDuplicatesNothing) {
  auto config = env_->write_config(settings("/crash/"));
  auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "crash");
  env_->start_service(service, config);

  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 10000; ++i) items.emplace_back("/crash/k" + std::to_string(i % 700), "v" + std::to_string(i));
  std::thread writer([&] {
    EtcdTestClient own(env_->etcd.endpoint());  // its own io_context: the fixture's client is not shared
    own.put_many(items, 16);
  });
  // Kill it mid-stream, once some of the stream is mirrored.
  ASSERT_TRUE(env_->wait_mirrored(first + 2000, 60s, "/crash/"));
  service.kill9();
  writer.join();
  env_->start_service(service, config);
  expect_history("/crash/", first);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, CompactionWhileStoppedResyncsTheNetStateWithTombstones) {
  auto config = env_->write_config(settings("/compact/"));
  ServiceProcess service(env_->dir.path(), "compact");
  env_->start_service(service, config);
  env_->client->put("/compact/keep", "1");
  env_->client->put("/compact/gone", "1");
  env_->client->put("/compact/changed", "1");
  auto before = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(before, 10s, "/compact/"));
  ASSERT_EQ(service.terminate(5s), 0);

  env_->client->del("/compact/gone");
  env_->client->put("/compact/changed", "2");
  auto changed_revision = env_->client->put("/compact/changed", "3");
  env_->client->put("/compact/new", "n");
  auto now = env_->client->revision();
  env_->client->compact(now);

  env_->start_service(service, config);
  ASSERT_TRUE(env_->wait_mirrored(now, 20s, "/compact/"));
  ASSERT_TRUE(service.wait_for_log("etcd compacted history that was never mirrored", 10s)) << service.log_text();
  EXPECT_NE(service.log_text().find("\"lost_from_revision\":" + std::to_string(before + 1)), std::string::npos);

  auto latest = env_->db().exec(
      "SELECT DISTINCT ON (key) key, value, revision, tombstone FROM etcd WHERE starts_with(key, '/compact/') "
      "ORDER BY key, revision DESC");
  std::map<std::string, std::vector<std::optional<std::string>>> by_key;
  for (auto& row : latest) by_key[*row[0]] = row;
  ASSERT_EQ(by_key.size(), 4u);
  EXPECT_EQ(*by_key["/compact/keep"][1], "1");
  EXPECT_EQ(*by_key["/compact/gone"][3], "t");
  // The tombstone is at the snapshot's revision: after the compaction (the restarted instance's
  // election key and outbox barrier come first), at or below etcd's revision now.
  EXPECT_GE(std::stoll(*by_key["/compact/gone"][2]), now);
  EXPECT_LE(std::stoll(*by_key["/compact/gone"][2]), env_->client->revision());
  EXPECT_EQ(*by_key["/compact/changed"][1], "3");
  EXPECT_EQ(std::stoll(*by_key["/compact/changed"][2]), changed_revision);
  EXPECT_EQ(*by_key["/compact/new"][1], "n");

  // And it goes on watching after the resync.
  auto later = env_->client->put("/compact/after", "x");
  EXPECT_TRUE(env_->wait_mirrored(later, 10s, "/compact/"));
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, CompactionFoundWhileRunningResyncsWithoutRestart) {
  auto config = env_->write_config(settings("/live/"));
  ServiceProcess service(env_->dir.path(), "live-compact");
  env_->start_service(service, config);
  env_->client->put("/live/a", "1");
  env_->client->put("/live/b", "1");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 10s, "/live/"));

  // PostgreSQL goes away, so the mirror must re-watch from its checkpoint when it comes back;
  // meanwhile etcd compacts the revisions it would need.
  env_->postgres.stop();
  env_->client->del("/live/a");
  env_->client->put("/live/b", "2");
  auto now = env_->client->revision();
  env_->client->compact(now);
  env_->postgres.start();

  ASSERT_TRUE(env_->wait_mirrored(now, 30s, "/live/")) << service.log_text();
  EXPECT_TRUE(service.wait_for_log("etcd compacted history that was never mirrored", 5s));
  auto rows = env_->db().exec(
      "SELECT DISTINCT ON (key) key, value, tombstone FROM etcd WHERE starts_with(key, '/live/') "
      "ORDER BY key, revision DESC");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(*rows[0][2], "t");
  EXPECT_EQ(*rows[1][1], "2");
  EXPECT_TRUE(service.running());
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, SnapshotOfOneHundredThousandKeysKeepsMemoryBounded) {
  std::vector<std::pair<std::string, std::string>> items;
  items.reserve(100000);
  for (int i = 0; i < 100000; ++i) items.emplace_back("/big/" + std::to_string(i), std::string(100, 'v'));
  env_->client->put_many(items, 64);
  items.clear();
  auto now = env_->client->revision();

  ServiceProcess service(env_->dir.path(), "big");
  auto begin = std::chrono::steady_clock::now();
  env_->start_service(service, env_->write_config(settings("/big/")));
  ASSERT_TRUE(env_->wait_mirrored(now, 120s, "/big/"));
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  std::ifstream status("/proc/" + std::to_string(service.pid()) + "/status");
  std::string line;
  long peak_kib = 0;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) peak_kib = std::stol(line.substr(6));
  std::printf("snapshot of 100000 keys: %.1f s, peak RSS %.1f MiB\n", seconds, peak_kib / 1024.0);
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd WHERE starts_with(key, '/big/')"), "100000");
  EXPECT_GT(peak_kib, 0);
#ifndef ETCD_SYNC_SANITIZED  // a sanitizer's shadow memory and quarantine are not etcd-sync's
  EXPECT_LT(peak_kib, 100 * 1024) << "peak RSS should not grow with the number of keys";
#endif
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, BinaryAndLargeValuesRoundTripByteForByte) {
  ServiceProcess service(env_->dir.path(), "binary");
  env_->start_service(service, env_->write_config(settings("/bin/")));
  std::string binary("\x00\xff\xfe text \x80\x01", 12);
  std::string large(1536 * 1024 - 512, 'x');  // just under etcd's default 1.5 MiB request limit
  for (std::size_t i = 0; i < large.size(); i += 4096) large[i] = static_cast<char>('a' + (i / 4096) % 26);
  env_->client->put("/bin/binary", binary);
  env_->client->put("/bin/nul", std::string("a\0b", 3));
  auto last = env_->client->put("/bin/large", large);
  ASSERT_TRUE(env_->wait_mirrored(last, 20s, "/bin/"));
  auto rows = env_->db().exec(
      "SELECT key, value IS NULL, encode(value_bytes, 'hex'), md5(value), length(value) FROM etcd "
      "WHERE starts_with(key, '/bin/') ORDER BY key");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(*rows[0][0], "/bin/binary");
  EXPECT_EQ(*rows[0][1], "t");
  EXPECT_EQ(*rows[0][2], "00fffe207465787420800100");
  EXPECT_EQ(*rows[1][0], "/bin/large");
  EXPECT_EQ(std::stoll(*rows[1][4]), static_cast<long long>(large.size()));
  EXPECT_EQ(*rows[2][0], "/bin/nul");
  EXPECT_EQ(*rows[2][2], "610062");
  auto stored = env_->db().exec("SELECT value FROM etcd WHERE key = '/bin/large'");
  EXPECT_TRUE(*stored[0][0] == large);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, KeysThatAreNotUtf8AreRecordedNotDropped) {
  ServiceProcess service(env_->dir.path(), "badkeys");
  env_->start_service(service, env_->write_config(settings("/badkey/")));
  auto revision = env_->client->put(std::string("/badkey/\xff\xfe", 10), "v");
  auto after = env_->client->put("/badkey/fine", "ok");
  ASSERT_TRUE(env_->wait_mirrored(after, 10s, "/badkey/"));
  auto rejected = env_->db().exec("SELECT encode(key_bytes, 'hex'), revision, reason FROM etcd_sync_rejected");
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(*rejected[0][0], "2f6261646b65792ffffe");
  EXPECT_EQ(std::stoll(*rejected[0][1]), revision);
  EXPECT_EQ(*rejected[0][2], "key is not valid UTF-8");
  EXPECT_TRUE(service.wait_for_log("recorded in etcd_sync_rejected", 5s));
  EXPECT_EQ(env_->mirror_rows("/badkey/").size(), 1u);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, SyncCarriesOnAcrossEtcdAndPostgresRestarts) {
  auto config = env_->write_config(settings("/restart/"));
  auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "restarts");
  env_->start_service(service, config);
  env_->client->put("/restart/a", "1");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 10s, "/restart/"));

  env_->etcd.restart();
  env_->client = std::make_unique<EtcdTestClient>(env_->etcd.endpoint());
  env_->client->put("/restart/b", "after etcd restart");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 30s, "/restart/")) << service.log_text();

  env_->postgres.restart();
  env_->client->put("/restart/c", "after postgres restart");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 30s, "/restart/")) << service.log_text();
  expect_history("/restart/", first);
  EXPECT_TRUE(service.running());
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, QuietPrefixCheckpointFollowsEtcdRevision) {
  ServiceProcess service(env_->dir.path(), "quiet");
  env_->start_service(service, env_->write_config(settings("/quiet/")));
  auto start = env_->checkpoint("/quiet/");
  // Traffic elsewhere moves etcd's revision; nothing under /quiet/ changes.
  for (int i = 0; i < 5; ++i) env_->client->put("/elsewhere/k", std::to_string(i));
  auto now = env_->client->revision();
  EXPECT_TRUE(env_->wait_mirrored(now, 15s, "/quiet/")) << "checkpoint stayed at " << start;
  EXPECT_TRUE(env_->mirror_rows("/quiet/").empty());
  EXPECT_EQ(service.terminate(5s), 0);
}

// A reload that changes the prefix while the first snapshot runs: the old generation ends (its
// snapshot abandoned or committed under the old prefix), and the new one mirrors the new prefix.
// The reload arrives while etcd-sync is frozen after the snapshot's first page (a failpoint).
TEST_F(MirrorTest, ReloadThatChangesThePrefixDuringTheFirstSnapshotMirrorsTheNewPrefix) {
  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 3000; ++i) items.push_back({"/old/" + std::to_string(i), "o"});
  for (int i = 0; i < 200; ++i) items.push_back({"/new/" + std::to_string(i), "n"});
  env_->client->put_many(items);
  auto s = settings("/old/");
  auto config = env_->write_config(s);
  ServiceProcess service(env_->dir.path(), "reload-during-snapshot");
  service.start({"start", "-c", config.string()}, {{"ETCD_SYNC_FAILPOINTS", "mirror.snapshot_page=stop"}});
  ASSERT_TRUE(service.wait_for_log("failpoint reached", 20s)) << service.log_text();
  s.prefix = "/new/";
  env_->write_config(s);
  service.signal(SIGHUP);
  service.signal(SIGCONT);
  ASSERT_TRUE(service.wait_for_log("reconnected with the reloaded configuration", 20s)) << service.log_text();
  auto now = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(now, 20s, "/new/")) << "no checkpoint for the new prefix";
  EXPECT_EQ(env_->mirror_rows("/new/").size(), 200u);
  EXPECT_EQ(*env_->db().scalar("SELECT count(*) FROM etcd WHERE key LIKE '/new/%'"), "200");
  EXPECT_EQ(service.terminate(5s), 0);
}

// [sync] batch_size caps the watch events per transaction: a backlog of 500 single-key puts is
// written in transactions of at most 10 rows (the rows of one transaction share its xmin).
TEST_F(MirrorTest, TransactionsHoldAtMostBatchSizeEvents) {
  auto s = settings("/batched/");
  s.batch_size = 10;
  auto config = env_->write_config(s);
  ServiceProcess service(env_->dir.path(), "batched");
  env_->start_service(service, config);
  ASSERT_EQ(service.terminate(5s), 0);
  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 500; ++i) items.push_back({"/batched/" + std::to_string(i % 37), std::to_string(i)});
  env_->client->put_many(items, 1);  // one put at a time: one event per revision
  env_->start_service(service, config);
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 20s, "/batched/"));
  EXPECT_EQ(env_->mirror_rows("/batched/").size(), 500u);
  auto per_transaction = env_->db().exec(
      "SELECT max(n), count(*) FROM (SELECT count(*) AS n FROM etcd WHERE key LIKE '/batched/%' GROUP BY xmin::text) t");
  EXPECT_LE(std::stoi(*per_transaction.at(0).at(0)), 10) << "the largest transaction";
  EXPECT_GE(std::stoi(*per_transaction.at(0).at(1)), 50) << "transactions";
  EXPECT_EQ(service.terminate(5s), 0);
}

// The first snapshot of a prefix copies straight into `etcd` only when no row of the prefix is
// there. Rows already there (restored from a backup, say, with the checkpoint lost) are
// reconciled instead: a key gone from etcd gets its tombstone, a row equal to etcd's is kept once.
TEST_F(MirrorTest, FirstSnapshotOverRowsAlreadyThereReconcilesThem) {
  const auto a = env_->client->put("/pre/a", "1");
  env_->client->put("/pre/b", "2");
  const auto config = env_->write_config(settings("/pre/"));
  ASSERT_EQ(run_binary({"migrate", "-c", config.string()}).exit_code, 0);
  env_->db().exec_params("INSERT INTO etcd (key, value, revision) VALUES ('/pre/a', '1', $1::bigint), ('/pre/gone', 'old', 1)",
                         {std::to_string(a)});
  ServiceProcess service(env_->dir.path(), "prefilled");
  env_->start_service(service, config);
  const auto now = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(now, 10s, "/pre/")) << service.log_text();
  auto rows = env_->db().exec(
      "SELECT key, revision, tombstone FROM etcd WHERE starts_with(key, '/pre/') ORDER BY key, revision");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(*rows[0][0], "/pre/a");
  EXPECT_EQ(std::stoll(*rows[0][1]), a);
  EXPECT_EQ(*rows[1][0], "/pre/b");
  EXPECT_EQ(*rows[2][0], "/pre/gone");
  EXPECT_EQ(*rows[3][0], "/pre/gone");
  EXPECT_EQ(*rows[3][2], "t") << "a tombstone at the snapshot's revision";
  EXPECT_EQ(std::stoll(*rows[3][1]), now);
  EXPECT_EQ(service.terminate(5s), 0);
}

// A backlog found at start (a thousand events or more read at once) is copied into `etcd` with COPY
// in transactions of up to 10,000 events, on two connections: every revision once, in order, with
// tombstones, bytes, etcd's metadata and the rejected key, in transactions larger than batch_size.
TEST_F(MirrorTest, BacklogAfterDowntimeIsCopiedWithEveryRevisionOnce) {
  auto config = env_->write_config(settings("/backlog/"));
  const auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "backlog");
  env_->start_service(service, config);
  ASSERT_EQ(service.terminate(5s), 0);

  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 3000; ++i) items.emplace_back("/backlog/k" + std::to_string(i % 400), "v" + std::to_string(i));
  env_->client->put_many(items, 16);
  put_txns_of_128("/backlog/many/", 160, "m");  // 20,480 events in one watch response: three COPY runs, two connections
  env_->client->del("/backlog/k7");
  env_->client->put("/backlog/bytes", std::string("\x00\xff\t\\", 4));
  const auto bad = env_->client->put(std::string("/backlog/\xff", 10), "v");
  const auto lease = env_->client->grant_lease(60);
  env_->client->put("/backlog/leased", "l", lease);
  std::vector<std::pair<std::string, std::string>> txn;
  for (int i = 0; i < 128; ++i) txn.emplace_back("/backlog/txn" + std::to_string(i), "t\n" + std::to_string(i));
  const auto txn_revision = env_->client->txn_puts(txn);
  const auto now = env_->client->revision();

  env_->start_service(service, config);
  ASSERT_TRUE(env_->wait_mirrored(now, 30s, "/backlog/")) << service.log_text();
  auto want = env_->client->history("/backlog/", first, now);
  std::erase_if(want, [&](const HistoryEntry& e) { return e.revision == bad; });  // not text: rejected
  expect_same_events(want, env_->mirror_rows("/backlog/"));
  if (HasFatalFailure()) return;

  // etcd's metadata, as etcd reports it now for the live keys; NULL on the tombstone.
  for (const std::string key : {"/backlog/k1", "/backlog/leased", "/backlog/txn127"}) {
    auto kv = env_->client->get(key);
    ASSERT_TRUE(kv) << key;
    auto row = env_->db().exec_params(
        "SELECT create_revision, version, lease FROM etcd WHERE key = $1 AND revision = $2",
        {key, std::to_string(kv->mod_revision())});
    ASSERT_EQ(row.size(), 1u) << key;
    EXPECT_EQ(std::stoll(*row[0][0]), kv->create_revision()) << key;
    EXPECT_EQ(std::stoll(*row[0][1]), kv->version()) << key;
    EXPECT_EQ(std::stoll(*row[0][2]), kv->lease()) << key;
  }
  EXPECT_EQ(*env_->db().scalar("SELECT count(*) FROM etcd WHERE key = '/backlog/k7' AND tombstone "
                               "AND create_revision IS NULL AND version IS NULL AND lease IS NULL"),
            "1");
  EXPECT_EQ(*env_->db().scalar("SELECT count(*) FROM etcd WHERE key LIKE '/backlog/txn%' AND revision = " +
                               std::to_string(txn_revision)),
            "128");
  auto rejected = env_->db().exec("SELECT encode(key_bytes, 'hex'), revision FROM etcd_sync_rejected");
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(*rejected[0][0], "2f6261636b6c6f672fff");
  EXPECT_EQ(std::stoll(*rejected[0][1]), bad);

  // Inserted, no transaction would hold more than batch_size (100) of the single puts.
  auto largest = std::stoi(*env_->db().scalar(
      "SELECT max(n) FROM (SELECT count(*) AS n FROM etcd WHERE starts_with(key, '/backlog/k') GROUP BY xmin::text) t"));
  EXPECT_GE(largest, 1000) << "the backlog was inserted, not copied";
  EXPECT_EQ(service.log_since_mark().find("already in the etcd table"), std::string::npos);
  EXPECT_EQ(service.terminate(5s), 0);
}

// A row already in `etcd` above the checkpoint (written by hand here; another etcd-sync on an
// overlapping prefix would do the same) makes PostgreSQL refuse the COPY as a duplicate. The
// backlog is 30,080 events in Txns of 128 (one watch response), so it is copied in three runs on
// two connections, and the row is in the second run: that run and the third are rolled back, the
// first stays, the rest is inserted with ON CONFLICT DO NOTHING, and the log says so. Every
// revision is there once.
TEST_F(MirrorTest, RowAlreadyAboveTheCheckpointTurnsTheBacklogIntoInserts) {
  auto config = env_->write_config(settings("/dup/"));
  const auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "dup");
  env_->start_service(service, config);
  ASSERT_EQ(service.terminate(5s), 0);
  put_txns_of_128("/dup/", 235, "v");
  const auto now = env_->client->revision();
  auto want = env_->client->history("/dup/", first, now);
  ASSERT_EQ(want.size(), 30080u);
  const auto& there = want[15000];  // runs hold 78 Txns (9,984 events): this is the second run's
  env_->db().exec_params("INSERT INTO etcd (key, value, revision) VALUES ($1, $2, $3::bigint)",
                         {there.key, *there.value, std::to_string(there.revision)});

  env_->start_service(service, config);
  ASSERT_TRUE(env_->wait_mirrored(now, 30s, "/dup/")) << service.log_text();
  EXPECT_TRUE(service.wait_for_log("already in the etcd table", 5s));
  expect_same_events(want, env_->mirror_rows("/dup/"));
  if (HasFatalFailure()) return;
  auto largest = std::stoi(*env_->db().scalar(
      "SELECT max(n) FROM (SELECT count(*) AS n FROM etcd WHERE starts_with(key, '/dup/') GROUP BY xmin::text) t"));
  EXPECT_GE(largest, 9984) << "the first run was copied and kept";
  EXPECT_EQ(service.terminate(5s), 0);
}

// etcd's KeyValue metadata lands beside every put, from the snapshot and from the watch; a key
// bound to a lease that expires arrives as a tombstone; etcd_current holds the live keys only.
TEST_F(MirrorTest, MetadataFromSnapshotAndWatchAndALeaseThatExpires) {
  const auto before = env_->client->put("/meta/old", "1");  // in the snapshot
  env_->client->put("/meta/old", "2");
  ServiceProcess service(env_->dir.path(), "metadata");
  env_->start_service(service, env_->write_config(settings("/meta/")));
  const auto lease = env_->client->grant_lease(2);
  const auto leased = env_->client->put("/meta/leased", "l", lease);
  const auto third = env_->client->put("/meta/old", "3");
  ASSERT_TRUE(env_->wait_mirrored(third, 10s, "/meta/"));
  auto row = [&](const std::string& key, std::int64_t revision) {
    return env_->db().exec_params(
        "SELECT create_revision, version, lease, tombstone FROM etcd WHERE key = $1 AND revision = $2::bigint",
        {key, std::to_string(revision)}).at(0);
  };
  auto snapshotted = env_->db().exec("SELECT revision, create_revision, version, lease FROM etcd WHERE key = '/meta/old' ORDER BY revision").at(0);
  EXPECT_EQ(*snapshotted[1], std::to_string(before)) << "created by the first put";
  EXPECT_EQ(*snapshotted[2], "2");
  EXPECT_EQ(*snapshotted[3], "0") << "no lease";
  auto watched = row("/meta/old", third);
  EXPECT_EQ(*watched[0], std::to_string(before));
  EXPECT_EQ(*watched[1], "3");
  auto with_lease = row("/meta/leased", leased);
  EXPECT_EQ(*with_lease[0], std::to_string(leased));
  EXPECT_EQ(*with_lease[1], "1");
  EXPECT_EQ(*with_lease[2], std::to_string(lease));
  auto current = env_->db().exec("SELECT key, value, revision, version, lease FROM etcd_current WHERE key LIKE '/meta/%' ORDER BY key");
  ASSERT_EQ(current.size(), 2u);
  EXPECT_EQ(*current[0][0], "/meta/leased");
  EXPECT_EQ(*current[1][1], "3");
  EXPECT_EQ(*current[1][3], "3");
  // The lease expires: etcd deletes the key, the mirror writes a tombstone with no metadata.
  ASSERT_TRUE(wait_until([&] {
    return env_->db().scalar("SELECT count(*) FROM etcd WHERE key = '/meta/leased' AND tombstone") == "1";
  }, 15s));
  auto tombstone = env_->db().exec("SELECT create_revision, version, lease FROM etcd WHERE key = '/meta/leased' AND tombstone").at(0);
  EXPECT_FALSE(tombstone[0] || tombstone[1] || tombstone[2]) << "metadata on a tombstone";
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd_current WHERE key = '/meta/leased'"), "0");
  EXPECT_EQ(env_->db().scalar("SELECT string_agg(key, ',') FROM etcd_current WHERE key LIKE '/meta/%'"), "/meta/old");
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(MirrorTest, SigtermStopsWithinAboutASecond) {
  ServiceProcess service(env_->dir.path(), "sigterm");
  env_->start_service(service, env_->write_config(settings("/term/")));
  auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(service.terminate(3s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
}

}  // namespace
}  // namespace etcd_sync::testing
