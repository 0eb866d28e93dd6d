#pragma once
// The rules for applying one etcd_wal row to etcd: which Txn to send, and what its answer or error
// means for the row. Pure: unit-tested without servers.

#include "adapters/errors.hpp"
#include "etcd/rpc.pb.h"
#include "reactor/config.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace etcd_sync {

/// A pending etcd_wal row as the outbox reads it.
struct WalRow {
  std::int64_t id = 0;
  std::string key;
  std::optional<std::string> value;  ///< bytes to put (from value or value_bytes); nullopt = delete
  std::optional<std::int64_t> revision;  ///< base mod_revision; nullopt = "the key does not exist"
  bool base_is_tombstone = false;  ///< `revision` names a tombstone row in the mirror
  int retry_count = 0;
  std::optional<std::int64_t> attempt_revision;  ///< etcd revision before an attempt whose result is unknown
};

/// Final or interim state of a row after one attempt.
enum class WalStatus { success, conflict, failed, retry };
const char* to_string(WalStatus status);

struct WalOutcome {
  WalStatus status = WalStatus::success;
  std::int64_t revision = 0;       ///< success: the etcd revision the write created (Txn header)
  std::string error_message;       ///< conflict/failed/retry: why
  bool conflict_resolved = false;  ///< counts in synchronization.conflicts_resolved
  bool transient = false;          ///< the attempt failed for a passing reason (counts in retry_count)
};

/// Checks what etcd cannot or must not take, before any call: empty key, key outside the prefix.
/// Returns the reason, or nullopt when the row may be sent.
std::optional<std::string> reject_reason(const WalRow& row, const std::string& prefix);

/// The Txn for a row. The compare is mod_revision(key) == revision, or version(key) == 0 when the
/// row has no base revision or its base is a tombstone. With etcd_wins the write happens only when
/// the compare holds (else a Range reads etcd's current revision); with postgres_wins it happens
/// either way, and a failed compare only counts as a resolved conflict.
etcdserverpb::TxnRequest build_txn(const WalRow& row, ConflictResolution resolution);

/// What a Txn answer means for the row.
WalOutcome decide_txn(const WalRow& row, const etcdserverpb::TxnResponse& response, ConflictResolution resolution);

/// What a failed call means: transient errors retry until `max_attempts` attempts were made (the
/// row's retry_count counts earlier failed attempts), then the row fails; other errors fail at once.
WalOutcome decide_error(const WalRow& row, const SyncError& error, int max_attempts);

/// After an attempt whose result is unknown (crash or timeout after sending), decides from etcd's
/// current view of the key whether that attempt took effect. `current` is the key's KeyValue
/// (nullopt when absent), `header_revision` etcd's revision at the read. Returns the outcome when it
/// can be decided, or nullopt when the write did not happen and the row should be applied normally.
/// Limitation: if the attempt did land and someone else then overwrote the key before this check,
/// etcd_wins reports a conflict (etcd's current value stays either way).
std::optional<WalOutcome> decide_unknown_attempt(const WalRow& row, const std::optional<mvccpb::KeyValue>& current,
                                                 std::int64_t header_revision, ConflictResolution resolution);

}  // namespace etcd_sync
