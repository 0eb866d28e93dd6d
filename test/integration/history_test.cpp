// Bounded history (README, "Bounded history"): [history] keep_versions and keep_for prune the
// `etcd` table in small batches on the leader, never its keys' latest rows (but a tombstone older
// than keep_for that is all that is left of a key), never a base a pending etcd_wal row names; a
// reload applies new settings at once; validate, etcd_get, etcd_get_all stay right.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

class HistoryTest : public SyncSuite {
 protected:
  /// A config under `prefix` with `history` appended as its [history] section.
  std::filesystem::path config(const std::string& prefix, const std::string& history) {
    auto path = env_->write_config(settings_for(prefix, "etcd_to_postgres"));
    std::ofstream out(path, std::ios::app);
    out << "\n[history]\n" << history << "\n";
    return path;
  }
  std::int64_t count(const std::string& sql) { return std::stoll(*env_->db().scalar(sql)); }
};

TEST_F(HistoryTest, KeepVersionsPrunesOldRowsButNeverTheLatestNorAPendingBase) {
  const std::string prefix = "/hist-v/";
  auto path = config(prefix, "keep_versions = 0");
  ServiceProcess service(env_->dir.path(), "history-versions");
  env_->start_service(service, path);
  std::int64_t old_base = 0;
  for (int v = 1; v <= 10; ++v)
    for (int k = 0; k < 5; ++k) {
      auto r = env_->client->put(prefix + "k" + std::to_string(k), "v" + std::to_string(v));
      if (k == 0 && v == 3) old_base = r;
    }
  env_->client->put(prefix + "gone", "1");
  auto deleted = env_->client->del(prefix + "gone");
  ASSERT_TRUE(env_->wait_mirrored(deleted, 10s, prefix));
  ASSERT_EQ(count("SELECT count(*) FROM etcd WHERE key LIKE '/hist-v/%'"), 52);
  // A pending row (the outbox is off here) based on an old revision of k0: that row is kept.
  env_->insert_wal("/hist-v/k0", "later", old_base);

  auto reloaded = config(prefix, "keep_versions = 2");
  ASSERT_EQ(reloaded, path);
  service.mark_log();
  service.signal(SIGHUP);
  ASSERT_TRUE(service.wait_for_log("configuration reloaded", 5s));
  EXPECT_TRUE(wait_until([&] { return count("SELECT count(*) FROM etcd WHERE key LIKE '/hist-v/%'") == 5 * 2 + 1 + 2; }, 20s))
      << count("SELECT count(*) FROM etcd WHERE key LIKE '/hist-v/%'") << " rows";
  EXPECT_EQ(count("SELECT max(n) FROM (SELECT count(*) AS n FROM etcd WHERE key LIKE '/hist-v/k_' AND key <> '/hist-v/k0' "
                  "GROUP BY key) t"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM etcd WHERE key = '/hist-v/k0' AND revision = " + std::to_string(old_base)), 1)
      << "a pending row's base was pruned";
  EXPECT_EQ(env_->db().scalar("SELECT value FROM etcd_get('/hist-v/k4')"), "v10");
  EXPECT_EQ(count("SELECT count(*) FROM etcd_get_all('/hist-v/k4', 0)"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM etcd_get('/hist-v/gone')"), 0) << "the tombstone (its latest row) stays";
  EXPECT_EQ(count("SELECT count(*) FROM etcd WHERE key = '/hist-v/gone'"), 2);
  auto validate = run_binary({"validate", "-c", path.string()});
  EXPECT_EQ(validate.exit_code, 0) << validate.stdout_text;
  auto status = run_binary({"status", "-c", path.string(), "--format", "json"});
  auto report = nlohmann::json::parse(status.stdout_text, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << status.stdout_text;
  EXPECT_EQ(report["history"]["keep_versions"], 2);
  EXPECT_TRUE(service.wait_for_log("\"msg\":\"history pruned\"", 5s));
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(HistoryTest, KeepForPrunesAgedRowsAndLoneAgedTombstonesButKeepsTheLiveValue) {
  const std::string prefix = "/hist-t/";
  auto path = config(prefix, "keep_for = \"1s\"");
  ServiceProcess service(env_->dir.path(), "history-age");
  env_->start_service(service, path);
  env_->client->put(prefix + "stable", "old");   // its only row: kept however old
  env_->client->put(prefix + "busy", "1");
  env_->client->put(prefix + "busy", "2");
  env_->client->put(prefix + "dead", "1");
  auto last = env_->client->del(prefix + "dead");
  ASSERT_TRUE(env_->wait_mirrored(last, 10s, prefix));
  ASSERT_EQ(count("SELECT count(*) FROM etcd WHERE key LIKE '/hist-t/%'"), 5) << "every revision mirrored first";
  // Once the rows are older than 1 s: busy keeps its latest, dead goes entirely, stable stays.
  EXPECT_TRUE(wait_until([&] {
    return env_->db().scalar("SELECT string_agg(key || '=' || coalesce(value, '-'), ',' ORDER BY key) FROM etcd "
                             "WHERE key LIKE '/hist-t/%'") == "/hist-t/busy=2,/hist-t/stable=old";
  }, 90s)) << env_->db().scalar("SELECT string_agg(key || '@' || revision, ',') FROM etcd WHERE key LIKE '/hist-t/%'").value_or("");
  EXPECT_EQ(env_->db().scalar("SELECT value FROM etcd_get('/hist-t/stable')"), "old");
  auto validate = run_binary({"validate", "-c", path.string()});
  EXPECT_EQ(validate.exit_code, 0) << validate.stdout_text;
  EXPECT_EQ(service.terminate(5s), 0);
}

}  // namespace
}  // namespace etcd_sync::testing
