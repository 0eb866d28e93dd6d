#pragma once
// The rules for applying etcd_wal rows to etcd: which rows share a Txn, which Txn to send, and what
// its answer or error means for each row. Pure: unit-tested without servers.

#include "adapters/errors.hpp"
#include "etcd/rpc.pb.h"
#include "reactor/config/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

/// The most rows one Txn carries. etcd refuses a Txn with more than --max-txn-ops (default 128)
/// operations in its compare list or in either branch; with postgres_wins every row takes two
/// operations (a read and a write).
int max_rows_per_txn(ConflictResolution resolution);

/// About how many bytes of keys and values one Txn may carry: below etcd's --max-request-bytes
/// (default 1.5 MiB), so a group of rows never makes a request etcd refuses that its rows alone
/// would not. A single row larger than this still goes alone.
inline constexpr std::size_t kMaxTxnPayloadBytes = 1024 * 1024;

/// Splits rows with distinct keys, in order, into the groups of consecutive rows that each fit one
/// Txn (max_rows_per_txn, kMaxTxnPayloadBytes), as indices into `rows`. Every row lands in
/// exactly one group.
std::vector<std::vector<std::size_t>> group_rows_for_txns(const std::vector<const WalRow*>& rows,
                                                          ConflictResolution resolution);

/// The one Txn that applies `rows` (one or more; their keys must be distinct, as etcd refuses a Txn
/// that writes a key twice) at a single etcd revision.
/// etcd_wins: compare every row's base (mod_revision(key) == revision, or version(key) == 0 when the
/// row has no base revision or its base is a tombstone); the success branch writes every row, the
/// failure branch reads every key (keys only), so the answer tells which compares failed.
/// postgres_wins: no compare; one branch reads every key, then writes every row: the writes happen
/// regardless, and the reads (taken before the writes) say whose base was stale.
etcdserverpb::TxnRequest build_txn(const std::vector<const WalRow*>& rows, ConflictResolution resolution);

/// What the answer to build_txn(rows) means for each row, in the same order. A row whose outcome
/// is nullopt was not written but its own compare held: another row's failed compare stopped the
/// Txn, and the row is to be sent again without the conflicting ones. If no row's compare is seen
/// failing in a failed Txn of several rows (which etcd's atomic reads rule out), every outcome is
/// nullopt and the caller sends the rows one by one; a failed Txn of one row is always a conflict.
std::vector<std::optional<WalOutcome>> decide_txn(const std::vector<const WalRow*>& rows,
                                                  const etcdserverpb::TxnResponse& response,
                                                  ConflictResolution resolution);

/// Whether a failed etcd call may succeed if repeated, so its rows retry: a transient error, or a
/// cancelled call (the row's own fault is neither).
bool worth_retrying(const SyncError& error);

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
