// Loading etcd fast, as (c) outbox's reference, (d) snapshot and (f) catch-up do: puts in Txns of
// 128 (etcd 3.4's default --max-txn-ops), several Txns in flight, on the generator's loop. And the
// references those scenarios measure beside etcd-sync: the same rows sent with COPY into a twin of
// the `etcd` table, and etcd's own Range read of a prefix paged as the snapshot pages it.
#pragma once

#include "perf/bench_env.hpp"

#include <functional>

namespace etcd_sync::bench {

/// Puts per Txn: etcd's default --max-txn-ops.
inline constexpr int puts_per_txn = 128;

/// One load of `total` keys named by `key(i)` for i in [0, total), each with `value`.
struct TxnLoad {
  int total = 0;
  std::function<std::string(int)> key;
  std::string value;
  Clock::time_point deadline = Clock::time_point::max();  ///< no new Txn is started after it
  // Results.
  std::int64_t loaded = 0;
  /// revisions[i / puts_per_txn]: the revision of the Txn that put key i (every put of a Txn shares it).
  std::vector<std::int64_t> revisions;
  // Internal.
  int next = 0;
  int running = 0;
  std::exception_ptr failure;
};

/// Runs `load` with `concurrency` Txns in flight until every key is put or its deadline passed;
/// rethrows the first failure.
asio::awaitable<void> load_etcd(Loop& loop, TxnLoad& load, int concurrency);

/// COPY text (key, value, revision, create_revision, version, lease) of the rows the mirror writes
/// for `load`'s puts, each a key's first version without a lease, in chunks of about a MiB. The
/// value is written as it is: the bench's values need no COPY escaping.
std::vector<std::string> twin_copy_rows(const TxnLoad& load);

/// What one COPY into a twin of `etcd` took, from its start to its end (its commit).
struct CopyFigures {
  double seconds = 0;
  std::int64_t rows = 0;
};

/// Connects `pg`, creates `twin` as `CREATE TABLE twin (LIKE etcd INCLUDING ALL)` (same columns,
/// defaults, constraints and indexes as the mirror's table; `etcd` must exist), then times one
/// `COPY twin (key, value, revision, create_revision, version, lease) FROM STDIN` of `chunks`.
/// Throws SyncError from PgConnection when PostgreSQL refuses.
asio::awaitable<void> copy_into_twin(PgConnection& pg, std::string twin, const std::vector<std::string>& chunks,
                                     CopyFigures& out);

/// The COPY reference of (d) and (f), etcd-sync stopped: `load`'s rows copied into a new
/// `etcd_copy_twin` over a connection of the generator's, timed, printed as two detail lines (the
/// figure; the CPU meanwhile, `service_pid`'s too if it is not 0), and the twin dropped.
CopyFigures time_twin_copy(Loop& loop, BenchEnv& env, const TxnLoad& load, pid_t service_pid);

/// What etcd's Range read of a prefix took.
struct RangeFigures {
  double seconds = 0;
  std::int64_t keys = 0;
  std::int64_t pages = 0;
  std::int64_t bytes = 0;  ///< key and value bytes of every KeyValue read
  std::int64_t revision = 0;
};

/// Reads every key under `prefix` at one revision (etcd's current one, taken from the first page),
/// in pages sized by bytes as the mirror's snapshot and `validate` size them (kRangeFirstPageKeys,
/// then next_range_page_limit of the previous page, reactor/keys), touching every key and value.
/// Throws SyncError from EtcdClient on a failed Range.
asio::awaitable<void> range_read(EtcdClient& etcd, std::string prefix, RangeFigures& out);

}  // namespace etcd_sync::bench
