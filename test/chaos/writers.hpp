// The fault suite's writers: concurrent changes on both sides of the same keys, every value unique
// so each write can be traced in etcd's history.
//
// - EtcdWriter: puts ("e-<stream>.<n>") and deletes through the project's EtcdClient on its own
//   io_context thread. Each delete is a Txn that also puts a marker key outside the synchronized
//   prefix (<marker prefix><stream>.<n>, value = the deleted key), so its revision is known from
//   etcd's history even when the call's answer was lost.
// - PgWriter: INSERTs into etcd_wal ("w-<stream>.<n>", a share of them deletes) based on the
//   mirror's revision (etcd_get), a share deliberately stale (an older revision from etcd_get_all,
//   or NULL while the key exists), some several rows in one statement. Each statement also records
//   every row's base in chaos_wal_base (the service overwrites etcd_wal.revision on success), in
//   the same statement, so a committed row always has its base and a statement whose COMMIT is in
//   doubt is looked up afterwards by its name.
//
// Each writer runs on its own thread at about `rate` writes per second, with every decision from its
// own seeded PRNG. stop() ends it and joins; the counters are final then.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/random.hpp"

namespace etcd_sync::testing {
class EtcdLoop;
}

namespace etcd_sync::chaos {

/// What a writer does, decided once per run.
struct WriterPlan {
  std::vector<std::string> keys;  ///< the overlapping keys both sides write
  double rate = 25;               ///< writes (rows, for PostgreSQL) per second
  std::uint64_t seed = 0;         ///< this writer's PRNG seed
  int stream = 0;                 ///< names its values and statements
  double delete_share = 0.25;
  double stale_share = 0.25;      ///< PostgreSQL: rows based on a stale revision
  double multi_row_share = 0.2;   ///< PostgreSQL: statements of 2-4 rows
};

/// The table the PostgreSQL writers keep each row's base in (created by create_base_table).
inline constexpr const char* kBaseTable = "chaos_wal_base";

/// CREATE TABLE chaos_wal_base (id = etcd_wal.id, base, statement) on `conninfo`.
void create_base_table(const std::string& conninfo);

class EtcdWriter {
 public:
  EtcdWriter(std::vector<std::string> endpoints, std::string marker_prefix, WriterPlan plan, ChaosLog& log);
  ~EtcdWriter();
  EtcdWriter(const EtcdWriter&) = delete;
  EtcdWriter& operator=(const EtcdWriter&) = delete;

  void start();
  /// Ends the loop after the call in flight (at most request_timeout) and joins.
  void stop();
  /// "etcd writer 0: 812 puts, 270 deletes, 9 calls failed (outcome unknown)".
  std::string summary() const;

 private:
  void run();
  boost::asio::awaitable<void> loop(testing::EtcdLoop& etcd);

  std::vector<std::string> endpoints_;
  std::string marker_prefix_;
  WriterPlan plan_;
  ChaosLog& log_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::atomic<std::uint64_t> puts_{0}, deletes_{0}, failures_{0};
};

class PgWriter {
 public:
  PgWriter(std::string conninfo, WriterPlan plan, ChaosLog& log);
  ~PgWriter();
  PgWriter(const PgWriter&) = delete;
  PgWriter& operator=(const PgWriter&) = delete;

  void start();
  /// Ends the loop after the statement in flight and joins. A statement in doubt is resolved first
  /// if PostgreSQL answers within a few seconds.
  void stop();
  /// "postgres writer 0: 700 rows in 600 statements (...)".
  std::string summary() const;

 private:
  void run();

  std::string conninfo_;
  WriterPlan plan_;
  ChaosLog& log_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::atomic<std::uint64_t> statements_{0}, rows_{0}, deletes_{0}, stale_{0}, multi_row_{0};
  std::atomic<std::uint64_t> in_doubt_committed_{0}, in_doubt_lost_{0}, in_doubt_unresolved_{0}, failed_{0};
};

}  // namespace etcd_sync::chaos
