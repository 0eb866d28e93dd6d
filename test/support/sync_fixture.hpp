// End-to-end test support: real etcd and PostgreSQL, a database, a config file written by the
// test, the etcd-sync binary, and a blocking etcd client built on the project's own adapter.
#pragma once

#include "adapters/etcd_client.hpp"
#include "adapters/grpc_bridge.hpp"
#include "test/support/etcd_loop.hpp"
#include "test/support/service_process.hpp"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace etcd_sync::testing {

/// The knobs tests turn; everything else takes its default (README.md, "Configuration").
struct SyncSettings {
  std::string prefix = "/";
  std::string direction = "bidirectional";
  std::string conflict_resolution = "etcd_wins";
  int batch_size = 100;
  std::string sync_interval = "1s";
  int max_attempts = 3;
  std::string initial_backoff = "100ms";
  std::string max_backoff = "1s";
  std::string log_level = "debug";
  std::string request_timeout = "5s";
  std::string dial_timeout = "2s";
};

/// One etcd event or row, as compared between etcd's history and the `etcd` table.
struct HistoryEntry {
  std::string key;
  std::optional<std::string> value;  ///< nullopt for a delete
  std::int64_t revision = 0;
  bool operator==(const HistoryEntry&) const = default;
};

/// Blocking calls on etcd through the project's EtcdClient (binary-safe, unlike etcdctl).
class EtcdTestClient {
 public:
  explicit EtcdTestClient(const std::string& endpoint);
  /// A client of a cluster: calls fail over between `endpoints`.
  explicit EtcdTestClient(const std::vector<std::string>& endpoints);

  std::int64_t put(const std::string& key, const std::string& value);  ///< returns the revision
  /// Puts bound to `lease`; returns the revision.
  std::int64_t put(const std::string& key, const std::string& value, std::int64_t lease);
  /// Grants a lease of `ttl_seconds`; returns its id.
  std::int64_t grant_lease(std::int64_t ttl_seconds);
  std::int64_t del(const std::string& key);                             ///< returns the revision
  /// Puts every (key, value) in one Txn; returns its revision.
  std::int64_t txn_puts(const std::vector<std::pair<std::string, std::string>>& items);
  std::optional<mvccpb::KeyValue> get(const std::string& key);
  std::int64_t revision();  ///< etcd's current revision
  void compact(std::int64_t revision);
  /// Puts every (key, value) with up to `concurrency` calls in flight.
  void put_many(const std::vector<std::pair<std::string, std::string>>& items, int concurrency = 32);
  /// Every event under `prefix` from `from_revision` to `to_revision` (inclusive), in order.
  std::vector<HistoryEntry> history(const std::string& prefix, std::int64_t from_revision, std::int64_t to_revision);

 private:
  EtcdLoop loop_;
};

/// etcd + PostgreSQL for one test suite, and a fresh database per test.
class SyncEnvironment {
 public:
  SyncEnvironment();
  ~SyncEnvironment();

  /// Drops and recreates the test database; call at the start of each test.
  void fresh_database();
  /// conninfo of the test database.
  std::string conninfo() const;
  /// Writes a config file for `settings` into the temp dir and returns its path.
  std::filesystem::path write_config(const SyncSettings& settings, const std::string& name = "etcd-sync.toml");
  /// Starts etcd-sync with the config (and `env` added to its environment, e.g. failpoints) and
  /// waits until it logged "etcd-sync started" (and, with the mirror on, that it watches).
  void start_service(ServiceProcess& service, const std::filesystem::path& config,
                     const std::map<std::string, std::string>& env = {});
  /// A blocking client on the test database (reconnects if the server restarted).
  PgClient& db();
  /// The mirror's checkpoint for `prefix` ("" for the whole keyspace), or -1 when none.
  std::int64_t checkpoint(const std::string& prefix = "");
  /// Waits until the checkpoint reaches `revision`.
  bool wait_mirrored(std::int64_t revision, std::chrono::milliseconds deadline = std::chrono::seconds(20),
                     const std::string& prefix = "");
  /// INSERT INTO etcd_wal (key, value, revision) (nullopt value: a delete; nullopt revision: NULL)
  /// and the new row's id.
  std::int64_t insert_wal(const std::string& key, const std::optional<std::string>& value,
                          std::optional<std::int64_t> revision);
  /// etcd_wal's rows counted by status, as "status:count" pairs by status ("" when empty): one
  /// line that says where an outbox test stands when it fails.
  std::string wal_status_counts();
  /// The `etcd` table as history entries, ordered by revision then key.
  std::vector<HistoryEntry> mirror_rows(const std::string& prefix = "");

  TempDir dir;
  EtcdServer etcd;
  PostgresServer postgres;
  std::unique_ptr<EtcdTestClient> client;

 private:
  std::unique_ptr<PgClient> db_;
  int database_number_ = 0;
};

/// Base of the end-to-end suites: one SyncEnvironment per suite (servers start once), and per
/// test a fresh database and servers running again if an earlier test stopped one.
class SyncSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env_ = std::make_unique<SyncEnvironment>(); }
  static void TearDownTestSuite() { env_.reset(); }
  void SetUp() override {
    ASSERT_TRUE(env_) << "the test environment did not start";
    if (!env_->etcd.is_running()) env_->etcd.start();
    if (!env_->postgres.is_running()) env_->postgres.start();
    env_->fresh_database();
  }
  /// Settings for a test whose keys live under `prefix`.
  static SyncSettings settings_for(const std::string& prefix, const std::string& direction = "bidirectional") {
    SyncSettings s;
    s.prefix = prefix;
    s.direction = direction;
    return s;
  }

  static inline std::unique_ptr<SyncEnvironment> env_;
};

}  // namespace etcd_sync::testing
