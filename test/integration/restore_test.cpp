// etcd goes back in time under a running or stopped etcd-sync: `etcdctl snapshot restore` of a
// backup, with a new cluster id and with the old one. README "When a server goes back in time".

#include "test/support/process.hpp"
#include "test/support/sync_fixture.hpp"
#include "test/support/wait.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <tuple>

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

class RestoreTest : public SyncSuite {
 protected:
  SyncSettings settings(const std::string& prefix) { return settings_for(prefix, "etcd_to_postgres"); }

  static void sort_by_revision(std::vector<HistoryEntry>& rows) {
    std::sort(rows.begin(), rows.end(),
              [](const HistoryEntry& a, const HistoryEntry& b) { return std::tie(a.revision, a.key) < std::tie(b.revision, b.key); });
  }

  /// The rows set apart, as history entries in (revision, key) order.
  std::vector<HistoryEntry> abandoned(const std::string& prefix) {
    std::vector<HistoryEntry> out;
    for (auto& row : env_->db().exec("SELECT key, value, revision FROM etcd_abandoned WHERE starts_with(key, '" + prefix +
                                     "') ORDER BY revision, key"))
      out.push_back({*row[0], row[1], std::stoll(*row[2])});
    return out;
  }

  /// Puts `count` keys, prefix + "k0", "k1", ..., each with `value`.
  void put_keys(const std::string& prefix, int count, const std::string& value) {
    for (int i = 0; i < count; ++i) env_->client->put(prefix + "k" + std::to_string(i), value);
  }

  /// `etcdctl snapshot save` of etcd as it is now, into the test's directory as `name`.
  std::filesystem::path save_backup(const std::string& name) {
    const auto backup = env_->dir.path() / name;
    env_->etcd.etcdctl({"snapshot", "save", backup.string()});
    return backup;
  }

  /// `etcd-sync validate` exits 0: etcd_current equals etcd under the prefix.
  static bool validate_clean(const std::filesystem::path& config) {
    return run_binary({"validate", "-c", config.string()}).exit_code == 0;
  }

  /// etcd's cluster id as etcdctl prints it in hex (`endpoint status -w fields`).
  std::string cluster_id() {
    const auto out = env_->etcd.etcdctl({"endpoint", "status", "-w", "fields"});
    const auto at = out.find("\"ClusterID\" : ");
    EXPECT_NE(at, std::string::npos) << out;
    std::uint64_t id = std::stoull(out.substr(at + 14));
    char text[17];
    std::snprintf(text, sizeof text, "%llx", static_cast<unsigned long long>(id));
    return text;
  }

  /// The test of both: `writes_after` puts follow the restore, with etcd-sync running throughout
  /// (`running`) or stopped from the backup to those puts; the restore gives etcd a new cluster id
  /// or keeps the one it had.
  void restore_and_check(const std::string& prefix, bool running, bool new_cluster_id, int writes_after) {
    const std::int64_t first = env_->client->revision();  // earlier tests may have compacted below
    auto config = env_->write_config(settings(prefix));
    ServiceProcess service(env_->dir.path(), "restore");
    env_->start_service(service, config);
    for (int i = 0; i < 100; ++i) env_->client->put(prefix + "k" + std::to_string(i), "first-" + std::to_string(i));
    const auto backup = env_->dir.path() / ("backup" + prefix.substr(1, prefix.size() - 2) + ".db");
    env_->etcd.etcdctl({"snapshot", "save", backup.string()});
    const auto snapshot_status = env_->etcd.etcdctl({"snapshot", "status", backup.string(), "-w", "json"});
    const auto at = snapshot_status.find("\"revision\":");
    ASSERT_NE(at, std::string::npos) << snapshot_status;
    const std::int64_t restored_revision = std::stoll(snapshot_status.substr(at + 11));
    for (int i = 0; i < 100; ++i) env_->client->put(prefix + "k" + std::to_string(i), "second-" + std::to_string(i));
    for (int i = 0; i < 10; ++i) env_->client->del(prefix + "k" + std::to_string(i));
    const std::int64_t checkpoint = env_->client->revision();
    ASSERT_TRUE(env_->wait_mirrored(checkpoint, 20s, prefix)) << service.log_text();
    auto before = env_->mirror_rows(prefix);
    const std::string old_id = cluster_id();
    if (!running) {
      ASSERT_EQ(service.terminate(5s), 0);
    }

    service.mark_log();
    env_->etcd.stop();
    env_->etcd.restore_snapshot(backup, new_cluster_id);
    env_->etcd.start();
    const std::string new_id = cluster_id();
    if (new_cluster_id) {
      EXPECT_NE(new_id, old_id);
    } else {
      EXPECT_EQ(new_id, old_id);
    }
    for (int i = 0; i < writes_after; ++i) env_->client->put(prefix + "n" + std::to_string(i), "after-" + std::to_string(i));
    const std::int64_t now = env_->client->revision();
    const auto restored_at = std::chrono::steady_clock::now();
    if (!running) env_->start_service(service, config);

    // The mirror converges to etcd as it now stands.
    ASSERT_TRUE(service.wait_for_log("etcd went back in time", 20s)) << service.log_since_mark();
    ASSERT_TRUE(wait_until([&] { return env_->checkpoint(prefix) >= now && validate_clean(config); }, 30s))
        << "checkpoint " << env_->checkpoint(prefix) << " < " << now << "\n" << service.log_since_mark();
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - restored_at);
    std::cout << "restore to validate clean: " << took.count() << " ms\n";
    const auto log = service.log_since_mark();
    EXPECT_NE(log.find("\"new_cluster_id\":\"" + new_id + "\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"old_cluster_id\":\"" + old_id + "\""), std::string::npos) << log;

    // Every revision of etcd's history as it now stands is in `etcd` exactly once, and nothing else.
    auto want = env_->client->history(prefix, first, now);
    auto got = env_->mirror_rows(prefix);
    sort_by_revision(want);
    sort_by_revision(got);
    EXPECT_EQ(got, want);

    // The rows of the abandoned timeline are set apart, all of them and only them.
    std::vector<HistoryEntry> gone;
    std::int64_t kept_through = 0;
    for (const auto& row : before) {
      if (row.revision > restored_revision) {
        gone.push_back(row);
      } else {
        kept_through = std::max(kept_through, row.revision);
      }
    }
    sort_by_revision(gone);
    EXPECT_EQ(abandoned(prefix), gone);
    auto record = env_->db().exec(
        "SELECT kept_through, rows_abandoned, new_cluster_id, caught_up_at IS NOT NULL FROM etcd_sync_rollbacks "
        "WHERE prefix = '" + prefix + "'");
    ASSERT_EQ(record.size(), 1u);
    EXPECT_EQ(std::stoll(*record[0][0]), kept_through);
    EXPECT_EQ(std::stoll(*record[0][1]), static_cast<std::int64_t>(gone.size()));
    EXPECT_EQ(*record[0][2], new_id);
    EXPECT_TRUE(wait_until([&] {
      return *env_->db().exec("SELECT caught_up_at IS NOT NULL FROM etcd_sync_rollbacks WHERE prefix = '" + prefix + "'")[0][0] == "t";
    }, 10s));

    // status shows it; and the mirror goes on.
    auto status = run_binary({"status", "-c", config.string(), "--format", "json"});
    EXPECT_NE(status.stdout_text.find("\"etcd_rollbacks\":{\"count\":1"), std::string::npos) << status.stdout_text;
    const auto later = env_->client->put(prefix + "later", "x");
    EXPECT_TRUE(env_->wait_mirrored(later, 10s, prefix));
    EXPECT_TRUE(validate_clean(config));
    EXPECT_EQ(service.terminate(5s), 0);
  }
};

TEST_F(RestoreTest, RestoreWithANewClusterIdUnderARunningServiceSetsTheLostRowsApart) {
  restore_and_check("/r1/", true, true, 50);
}

TEST_F(RestoreTest, RestoreKeepingTheClusterIdWhileStoppedIsFoundByItsHistory) {
  // 150 puts after the restore take etcd's revision past the checkpoint again: only the history
  // of the last mirrored revision shows what happened.
  restore_and_check("/r2/", false, false, 150);
}

TEST_F(RestoreTest, RestoreKeepingTheClusterIdUnderARunningServiceIsFoundByItsRevision) {
  restore_and_check("/r3/", true, false, 0);
}

TEST_F(RestoreTest, RestoreThenCompactionSetsUnprovableRowsApartAndResyncs) {
  const std::string prefix = "/r4/";
  auto config = env_->write_config(settings(prefix));
  ServiceProcess service(env_->dir.path(), "restore-compact");
  env_->start_service(service, config);
  put_keys(prefix, 20, "first");
  const auto backup = save_backup("backup-r4.db");
  put_keys(prefix, 20, "second");
  env_->client->del(prefix + "k0");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 20s, prefix)) << service.log_text();
  const auto before = env_->mirror_rows(prefix);
  ASSERT_EQ(service.terminate(5s), 0);

  env_->etcd.stop();
  env_->etcd.restore_snapshot(backup, false);
  env_->etcd.start();
  for (int i = 0; i < 40; ++i) env_->client->put(prefix + "n" + std::to_string(i), "after");
  env_->client->del(prefix + "k1");
  const auto now = env_->client->revision();
  env_->client->compact(now);  // the history that would prove any mirrored row is gone

  service.mark_log();
  env_->start_service(service, config);
  ASSERT_TRUE(wait_until([&] { return env_->checkpoint(prefix) >= now && validate_clean(config); }, 30s))
      << service.log_since_mark();
  const auto log = service.log_since_mark();
  EXPECT_NE(log.find("etcd went back in time"), std::string::npos) << log;
  EXPECT_NE(log.find("etcd compacted the history that would prove the rows below"), std::string::npos) << log;
  EXPECT_NE(log.find("resynchronized the net state"), std::string::npos) << log;
  // Nothing could be proven: every row is set apart, none is lost, and the state is etcd's.
  auto gone = before;
  sort_by_revision(gone);
  EXPECT_EQ(abandoned(prefix), gone);
  EXPECT_EQ(*env_->db().exec("SELECT count(*) FROM etcd_current WHERE starts_with(key, '" + prefix + "')")[0][0],
            "59");  // k1..k19 restored, k1 deleted again: k2..k19 (18) + k0 back (1) + n0..n39 (40)
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(RestoreTest, OutboxRowsAcrossARestoreAreNeitherAppliedTwiceNorLeftClaimingSuccess) {
  const std::string prefix = "/o1/";
  const std::int64_t first = env_->client->revision();  // earlier tests may have compacted below
  auto config = env_->write_config(settings_for(prefix, "bidirectional"));
  ServiceProcess service(env_->dir.path(), "restore-outbox");
  env_->start_service(service, config);
  auto settled = [&](int rows) {
    return wait_until([&] {
      return *env_->db().exec("SELECT count(*) FROM etcd_wal WHERE status <> 'pending'")[0][0] == std::to_string(rows);
    }, 20s);
  };
  for (int i = 0; i < 30; ++i) env_->insert_wal(prefix + "before" + std::to_string(i), "v", std::nullopt);
  ASSERT_TRUE(settled(30)) << env_->wal_status_counts() << service.log_text();
  const auto backup = env_->dir.path() / "backup-o1.db";
  env_->etcd.etcdctl({"snapshot", "save", backup.string()});
  for (int i = 0; i < 30; ++i) env_->insert_wal(prefix + "lost" + std::to_string(i), "v", std::nullopt);
  ASSERT_TRUE(settled(60)) << env_->wal_status_counts() << service.log_text();
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 20s, prefix));

  service.mark_log();
  env_->etcd.stop();
  env_->etcd.restore_snapshot(backup, true);
  env_->etcd.start();
  for (int i = 0; i < 30; ++i) env_->insert_wal(prefix + "after" + std::to_string(i), "v", std::nullopt);
  ASSERT_TRUE(settled(90)) << env_->wal_status_counts() << service.log_since_mark();
  ASSERT_TRUE(wait_until([&] { return validate_clean(config); }, 30s)) << service.log_since_mark();
  // Every row settled success; the "lost" ones, whose writes the restore took away, say so and
  // were not sent again; the others are in etcd, each once.
  auto count = [&](const std::string& where) {
    return *env_->db().exec("SELECT count(*) FROM etcd_wal WHERE starts_with(key, '" + prefix + "') AND " + where)[0][0];
  };
  EXPECT_EQ(count("status = 'success'"), "90") << env_->wal_status_counts();
  EXPECT_EQ(count("key LIKE '%lost%' AND error_message LIKE 'taken away by an etcd restore%'"), "30");
  EXPECT_EQ(count("error_message IS NOT NULL AND key NOT LIKE '%lost%'"), "0");
  EXPECT_EQ(*env_->db().exec("SELECT wal_taken_away FROM etcd_sync_rollbacks WHERE prefix = '" + prefix + "'")[0][0], "30");
  EXPECT_EQ(*env_->db().exec("SELECT count(*) FROM etcd_abandoned WHERE key LIKE '%lost%'")[0][0], "30");
  auto history = env_->client->history(prefix, first, env_->client->revision());
  EXPECT_EQ(history.size(), 60u);  // "before" and "after": each write once
  EXPECT_FALSE(env_->client->get(prefix + "lost0").has_value());
  EXPECT_TRUE(env_->client->get(prefix + "after0").has_value());
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(RestoreTest, ARowInDoubtWhoseAttemptTheRestoreTookAwayIsSentAgainOnce) {
  const std::string prefix = "/o2/";
  auto config = env_->write_config(settings_for(prefix, "bidirectional"));
  const auto backup = env_->dir.path() / "backup-o2.db";
  env_->etcd.etcdctl({"snapshot", "save", backup.string()});
  // etcd moves on well past the snapshot, so the attempt below is above anything the restored
  // etcd reaches before the row is checked.
  for (int i = 0; i < 50; ++i) env_->client->put("/elsewhere/o2-" + std::to_string(i), "x");

  // The first Txn reaches etcd and the process dies before it records the outcome.
  ServiceProcess service(env_->dir.path(), "restore-doubt");
  env_->start_service(service, config, {{"ETCD_SYNC_FAILPOINTS", "outbox.after_txn=kill"}});
  const auto id = env_->insert_wal(prefix + "doubt", "v", std::nullopt);
  ASSERT_TRUE(wait_until([&] { return !service.running(); }, 20s)) << service.log_text();
  auto attempt = env_->db().exec("SELECT status, attempt_revision FROM etcd_wal WHERE id = " + std::to_string(id));
  ASSERT_EQ(*attempt[0][0], "pending");
  ASSERT_TRUE(attempt[0][1].has_value()) << "the row is in doubt";
  ASSERT_TRUE(env_->client->get(prefix + "doubt").has_value()) << "the attempt reached etcd";

  env_->etcd.stop();
  env_->etcd.restore_snapshot(backup, true);
  env_->etcd.start();
  ASSERT_FALSE(env_->client->get(prefix + "doubt").has_value()) << "the restore took the write away";
  ASSERT_LT(env_->client->revision(), std::stoll(*attempt[0][1]));

  env_->start_service(service, config);
  ASSERT_TRUE(wait_until([&] {
    return *env_->db().exec("SELECT status FROM etcd_wal WHERE id = " + std::to_string(id))[0][0] == "success";
  }, 20s)) << env_->wal_status_counts() << service.log_text();
  EXPECT_TRUE(service.wait_for_log("etcd's revision is below the attempts of rows in doubt", 5s)) << service.log_text();
  // The leader epoch PostgreSQL records is from the history etcd lost: taken over, not waited out.
  EXPECT_NE(service.log_text().find("the leader epoch PostgreSQL records is above etcd's revision"), std::string::npos);
  EXPECT_EQ(service.log_text().find("elected, but not leading"), std::string::npos);
  // Once in etcd's history as it now stands, at the revision the row says, and not marked.
  auto row = env_->db().exec("SELECT revision, error_message FROM etcd_wal WHERE id = " + std::to_string(id));
  auto history = env_->client->history(prefix, env_->client->get(prefix + "doubt")->create_revision(),
                                       env_->client->revision());
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(std::stoll(*row[0][0]), history[0].revision);
  EXPECT_FALSE(row[0][1].has_value()) << *row[0][1];
  ASSERT_TRUE(wait_until([&] { return validate_clean(config); }, 20s)) << service.log_text();
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(RestoreTest, ValidateFixAfterARestoreSetsTheLostRowsApartToo) {
  const std::string prefix = "/v1/";
  auto config = env_->write_config(settings(prefix));
  ServiceProcess service(env_->dir.path(), "restore-fix");
  env_->start_service(service, config);
  put_keys(prefix, 10, "first");
  const auto backup = save_backup("backup-v1.db");
  put_keys(prefix, 10, "second");
  ASSERT_TRUE(env_->wait_mirrored(env_->client->revision(), 20s, prefix)) << service.log_text();
  ASSERT_EQ(service.terminate(5s), 0);

  env_->etcd.stop();
  env_->etcd.restore_snapshot(backup, false);
  env_->etcd.start();
  for (int i = 0; i < 30; ++i) env_->client->put(prefix + "n" + std::to_string(i), "after");

  EXPECT_EQ(run_binary({"validate", "-c", config.string()}).exit_code, 1);  // differences, found
  auto fix = run_binary({"validate", "-c", config.string(), "--fix"});
  EXPECT_EQ(fix.exit_code, 0) << fix.stdout_text << fix.stderr_text;
  EXPECT_TRUE(validate_clean(config));
  EXPECT_EQ(*env_->db().exec("SELECT count(*) FROM etcd_abandoned WHERE value = 'second' AND starts_with(key, '" +
                             prefix + "')")[0][0],
            "10");
  EXPECT_EQ(*env_->db().exec("SELECT count(*) FROM etcd_current WHERE starts_with(key, '" + prefix + "')")[0][0], "40");
}

TEST_F(RestoreTest, PostgresRestoredFromAColdBackupIsNoticedAndTheMirrorRereadsWhatItLost) {
  const std::string prefix = "/p1/";
  const std::int64_t first = env_->client->revision();
  auto config = env_->write_config(settings(prefix));
  ServiceProcess service(env_->dir.path(), "restore-postgres");
  env_->start_service(service, config);
  for (int i = 0; i < 20; ++i) env_->client->put(prefix + "k" + std::to_string(i), "first");
  const auto backed_up = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(backed_up, 20s, prefix)) << service.log_text();

  // A cold backup: PostgreSQL stopped, its data directory copied as it is (cp -a keeps the owner).
  const auto data = env_->postgres.data_dir();
  const auto copy = data.parent_path() / "data.cold-backup";
  env_->postgres.stop();
  auto copied = run_command("/bin/cp", {"-a", data.string(), copy.string()});
  ASSERT_EQ(copied.exit_code, 0) << copied.stderr_text;
  env_->postgres.start();
  for (int i = 0; i < 20; ++i) env_->client->put(prefix + "k" + std::to_string(i), "second");
  const auto mirrored = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(mirrored, 20s, prefix)) << service.log_text();

  // The restore: the copy replaces the data directory.
  service.mark_log();
  env_->postgres.stop();
  std::filesystem::rename(data, data.parent_path() / "data.before-restore");
  std::filesystem::rename(copy, data);
  env_->postgres.start();
  // The mirror finds its connection gone at its next write, and the checkpoint low when it reconnects.
  env_->client->put(prefix + "after", "x");
  ASSERT_TRUE(service.wait_for_log("PostgreSQL went back in time", 20s)) << service.log_since_mark();
  const auto log = service.log_since_mark();
  EXPECT_NE(log.find("\"committed_checkpoint\":"), std::string::npos) << log;
  // The rows PostgreSQL lost come back from etcd's history, each once.
  const auto now = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(now, 20s, prefix)) << service.log_since_mark();
  auto want = env_->client->history(prefix, first, now);
  auto got = env_->mirror_rows(prefix);
  sort_by_revision(want);
  sort_by_revision(got);
  EXPECT_EQ(got, want);
  EXPECT_TRUE(validate_clean(config));
  EXPECT_EQ(service.terminate(5s), 0);
}

}  // namespace
}  // namespace etcd_sync::testing
