// Loading etcd fast, as (d) snapshot and (f) catch-up do: puts in Txns of 128 (etcd 3.4's default
// --max-txn-ops), several Txns in flight, on the generator's loop.
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

}  // namespace etcd_sync::bench
