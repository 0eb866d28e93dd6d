#pragma once
// Where an etcd_wal row becomes an etcd Txn: which rows share a Txn, the Txn they become, and what
// etcd's answer or error means for each row. Pure: unit-tested without servers.
//
// Every Txn is fenced and leaves a receipt (README, "How it works"):
// - it compares the mod_revision of the outbox's barrier key, which only a barrier (in_doubt.hpp)
//   moves, so an attempt still on its way to etcd when the outbox decides it was not applied can
//   never land afterwards;
// - when applied, it also puts the outbox's receipt key, whose value names every row it carried
//   (id and fingerprint), so whether a Txn whose answer was lost took effect is read from etcd's
//   history of that key, not guessed from the rows' keys.

#include "adapters/errors.hpp"
#include "etcd/rpc.pb.h"
#include "reactor/config/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace etcd_sync {

/// A pending etcd_wal row as the outbox claims it.
struct WalRow {
  std::int64_t id = 0;
  std::string key;
  std::optional<std::string> value;      ///< bytes to put (from value or value_bytes); nullopt = delete
  std::optional<std::int64_t> revision;  ///< base mod_revision; nullopt = "the key does not exist"
  bool base_is_tombstone = false;        ///< `revision` names a tombstone row in the mirror
  int retry_count = 0;
  /// Set when an earlier attempt may have reached etcd: etcd's revision before that attempt, so any
  /// write it made is at a higher revision. The row is then in doubt until its receipt is looked up.
  std::optional<std::int64_t> attempt_revision;
  std::int64_t attempt_token = 0;  ///< this claim's token: the outcome UPDATE matches it
  /// etcd's revision recorded by this claim: below every write of this claim's attempts (the
  /// attempt_revision of a fresh row once its Txn ends in doubt).
  std::int64_t claim_revision = 0;
};

/// Final or interim state of a row after one attempt.
enum class WalStatus { success, conflict, failed, retry };
/// The etcd_wal status a WalStatus is written as ("pending" for a retry).
const char* to_string(WalStatus status);

struct WalOutcome {
  WalStatus status = WalStatus::success;
  /// success: the etcd revision of the write (0 when nothing_deleted).
  std::int64_t revision = 0;
  std::string error_message;       ///< conflict/failed/retry: why; a success that deleted nothing: a note
  bool conflict_resolved = false;  ///< counts in synchronization.conflicts_resolved
  bool transient = false;          ///< a row error that may pass: counts in retry_count
  bool nothing_deleted = false;    ///< success of a delete that found the key already absent
};

/// The outbox's own keys under [ha] election_prefix: the barrier, whose mod_revision every outbox
/// Txn compares, and the receipt, which every applied outbox Txn puts. Never mirrored.
struct OutboxKeys {
  std::string barrier;
  std::string receipt;
};
OutboxKeys outbox_keys(const std::string& election_prefix);

/// What a Txn is fenced with: the barrier's mod_revision as the outbox last set or read it, and
/// the leader's election key with its epoch (that key's create_revision; empty key: no leader
/// compare).
struct TxnFence {
  OutboxKeys keys;
  std::int64_t barrier_revision = 0;
  std::string leader_key;
  std::int64_t epoch = 0;
};

/// Checks what etcd cannot or must not take, before any call: an empty key, a key outside the
/// prefix, a key under election_prefix (etcd-sync's own). Returns the reason, or nullopt.
std::optional<std::string> reject_reason(const WalRow& row, const std::string& prefix,
                                         const std::string& election_prefix);

/// A 32-bit fingerprint of what the row asks for (key, put or delete, value, base revision): FNV-1a
/// (Fowler, Noll, Vo). A receipt names a row by id and fingerprint, so a row id that PostgreSQL
/// handed out again after a failover is not mistaken for the row whose receipt it was.
std::uint32_t row_fingerprint(const WalRow& row);

/// One row named in a receipt.
struct ReceiptEntry {
  std::int64_t id = 0;
  std::uint32_t fingerprint = 0;
  bool operator==(const ReceiptEntry&) const = default;
};
/// The receipt value for `rows`: "v1 " then "id:fingerprint" (hex) entries joined by ','.
std::string receipt_value(const std::vector<const WalRow*>& rows);
/// The entries of a receipt value; nullopt when it is not one (another version, or garbage).
std::optional<std::vector<ReceiptEntry>> parse_receipt(std::string_view value);

/// etcd's --max-txn-ops default (embed.DefaultMaxTxnOps): at most this many operations in a Txn's
/// compare list and in either branch (etcdserver/api/v3rpc/key.go, checkTxnRequest).
inline constexpr int kMaxTxnOps = 128;

/// The most rows one Txn carries: etcd_wins takes one compare, one write and one read per row plus
/// the barrier's and the leader key's compares and reads and the receipt's put; postgres_wins a
/// read and a write per row plus the receipt.
int max_rows_per_txn(ConflictResolution resolution);

/// About how many bytes of keys and values one Txn may carry: below etcd's --max-request-bytes
/// (default 1.5 MiB), so a group of rows never makes a request etcd refuses that its rows alone
/// would not. A single row larger than this still goes alone.
inline constexpr std::size_t kMaxTxnPayloadBytes = 1024 * 1024;

/// The barrier as a fenced Txn: put the barrier key only if the leader key still has the epoch
/// (deposed leaders raise none). Its header revision is the barrier's new mod_revision.
etcdserverpb::TxnRequest barrier_txn(const TxnFence& fence);
/// Whether the answer to barrier_txn or build_txn says the leader key is no longer the fence's.
bool deposed(const etcdserverpb::TxnResponse& response, const TxnFence& fence);

/// Splits rows with distinct keys, in order, into the groups of consecutive rows that each fit one
/// Txn (max_rows_per_txn, kMaxTxnPayloadBytes), as indices into `rows`. Every row lands in
/// exactly one group.
std::vector<std::vector<std::size_t>> group_rows_for_txns(const std::vector<const WalRow*>& rows,
                                                          ConflictResolution resolution);

/// The one Txn that applies `rows` (one or more; their keys must be distinct, as etcd refuses a Txn
/// that writes a key twice) at a single etcd revision.
/// Both modes compare the barrier first (mod_revision(barrier) == fence.barrier_revision) and the
/// leader key (create_revision(leader_key) == fence.epoch), read both in the failure branch, and
/// put the receipt in the success branch.
/// etcd_wins: compare every row's base too (mod_revision(key) == revision, or version(key) == 0
/// when the row has no base revision or its base is a tombstone); the success branch writes every
/// row, the failure branch reads the barrier and every key (keys only), so the answer tells which
/// compares failed.
/// postgres_wins: the success branch reads every key, then writes every row: the writes happen
/// unless the barrier moved, and the reads (taken before the writes) say whose base was stale; the
/// failure branch reads the barrier.
etcdserverpb::TxnRequest build_txn(const std::vector<const WalRow*>& rows, ConflictResolution resolution,
                                   const TxnFence& fence);

/// What the answer to build_txn(rows, resolution, fence) means.
struct TxnVerdict {
  /// The leader key is gone or another's: this instance no longer leads. Nothing was applied.
  bool deposed = false;
  /// The barrier moved since `fence` was taken: nothing was applied. Send again fenced with
  /// `barrier_revision` (as the failure branch read it).
  bool fenced = false;
  std::int64_t barrier_revision = 0;
  /// Per row, in order. nullopt: not written although its own compare held (another row's failed
  /// compare stopped the Txn); send it again without the conflicting rows. If no row's compare is
  /// seen failing in a failed Txn of several rows (which etcd's atomic reads rule out), every
  /// outcome is nullopt and the caller sends the rows one by one; a failed Txn of one row is always
  /// a conflict.
  std::vector<std::optional<WalOutcome>> outcomes;
};
TxnVerdict decide_txn(const std::vector<const WalRow*>& rows, const etcdserverpb::TxnResponse& response,
                      ConflictResolution resolution, const TxnFence& fence);

/// The outcome of a row whose Txn was applied at `revision`. For a delete, `key_existed` says
/// whether the key was there to delete (nullopt: from the row's base, as etcd_wins compared it);
/// when it was not, the row is a success that deleted nothing, with no revision.
WalOutcome applied_outcome(const WalRow& row, std::int64_t revision, std::optional<bool> key_existed);

/// How an error of a Txn carrying rows is handled.
enum class TxnErrorKind {
  outage,         ///< etcd unreachable, no leader, timed out, or the call was cancelled: the rows may
                  ///< have been applied (in doubt) and their attempts are not spent
  row_permanent,  ///< etcd refused the request itself (too large, too many operations, permission):
                  ///< not applied; fails the row at once
  row_transient,  ///< not understood: counts as an attempt of the row, up to max_attempts
};
TxnErrorKind classify_txn_error(const SyncError& error);

/// The outcome of a row etcd refused with `error` (classify_txn_error is row_permanent or
/// row_transient). A permanent refusal fails at once with a message naming etcd's limit or the
/// permission; a transient one retries until `max_attempts` attempts were made (the row's
/// retry_count counts earlier ones).
WalOutcome decide_row_error(const WalRow& row, const SyncError& error, int max_attempts);

}  // namespace etcd_sync
