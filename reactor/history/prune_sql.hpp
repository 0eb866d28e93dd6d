#pragma once
// Bounded history (README, "Bounded history"): which rows of `etcd` a pruning pass deletes, as
// statements. Pure: unit-tested without servers.
//
// A pass walks the prefix's rows in revision order, a window at a time, along etcd_revision_idx.
// In a window it deletes the rows that are
//   - beyond the `keep_versions` newest rows of their key, or
//   - older than `keep_for` (by ts) and not their key's latest row,
// and then the tombstones older than keep_for that are the only row left of their key. It never
// deletes a key's latest row otherwise, nor a row a pending etcd_wal row names as its base (the
// outbox reads a base's tombstone flag from it).

#include "adapters/pg_connection.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace etcd_sync {

/// What to keep, from [history].
struct KeepRules {
  int keep_versions = 0;                   ///< 0: no limit
  std::chrono::milliseconds keep_for{0};  ///< 0: forever
  bool prunes() const { return keep_versions > 0 || keep_for.count() > 0; }
};

/// The revision that ends the window of `window` rows after `cursor` under `prefix` (the last
/// row's revision), or NULL when there is none: the pass is over.
PgStatement window_end_statement(const std::string& prefix, std::int64_t cursor, int window);

/// Deletes, among the rows of (cursor, window_end] under `prefix`, those beyond keep_versions and
/// those older than keep_for with a newer row of their key; returns how many (affected()).
PgStatement prune_superseded_statement(const std::string& prefix, std::int64_t cursor, std::int64_t window_end,
                                       const KeepRules& rules);
/// Deletes, among the rows of (cursor, window_end], the tombstones older than keep_for that are
/// their key's only row (run after prune_superseded_statement in the same transaction). Returns
/// how many (affected()).
PgStatement prune_lone_tombstones_statement(const std::string& prefix, std::int64_t cursor, std::int64_t window_end,
                                            const KeepRules& rules);

}  // namespace etcd_sync
