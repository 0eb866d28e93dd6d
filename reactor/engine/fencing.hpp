#pragma once
// Fencing (README, "Several instances"): every write of the leader carries the epoch it was made
// under, and the stores refuse an older one. In PostgreSQL each writing transaction calls
// etcd_sync_fence(prefix, epoch) last (schema/006); in etcd each outbox Txn compares the election
// key's create_revision with the epoch (wal_txn.hpp). A fenced write is the sign that another
// instance leads: the engine reports it and writes nothing more.

#include "adapters/errors.hpp"
#include "adapters/pg_connection.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace etcd_sync {

/// What the leader writes under.
struct LeaderTerm {
  std::int64_t epoch = 0;  ///< its election key's create_revision (an etcd revision: only grows)
  std::string key;         ///< that election key
  std::string prefix;      ///< the epoch row's prefix (effective_prefix form)
  /// etcd's current revision when the instance was elected (a linearizable read; 0: not known).
  /// An epoch PostgreSQL records above it is from a history etcd no longer has: etcd went back.
  std::int64_t etcd_revision = 0;
};

/// An engine's view of fencing: the term it writes under (none: nothing to fence, as in a dry run
/// or validate --fix) and whom to tell when a write was fenced.
struct Fencing {
  std::optional<LeaderTerm> term;
  std::function<void(const SyncError&)> on_fenced;

  /// Appends the fence check to a transaction's statements (before its COMMIT); nothing without a term.
  void append(std::vector<PgStatement>& statements) const;
  /// When `error` says the write was fenced: reports it (once per call) and returns true.
  bool fenced(const SyncError& error) const;
};

/// SELECT etcd_sync_fence(prefix, epoch): fails with SQLSTATE ES001 when another epoch leads.
PgStatement fence_statement(const LeaderTerm& term);

}  // namespace etcd_sync
