#pragma once
// Rows in doubt: an attempt may have reached etcd but its answer was lost (etcd-sync crashed, the
// call timed out, the connection broke, the outcome could not be written). Whether it took effect
// is decided from etcd's history of the outbox's receipt key (wal_txn.hpp), read up to a barrier
// that no earlier attempt can pass, never from the key's current value. Pure: unit-tested without
// servers.

#include "reactor/outbox/wal_txn.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace etcd_sync {

/// The receipts etcd's history holds for revisions [from_revision, to_revision].
class ReceiptLog {
 public:
  /// Receipts are being read from `from_revision` (the watch's start; higher when etcd compacted
  /// the revisions before it).
  explicit ReceiptLog(std::int64_t from_revision) : from_revision_(from_revision) {}

  /// A put of the receipt key at `revision` with `value`. Values that are not receipts are ignored.
  void add(std::int64_t revision, std::string_view value);
  /// Every revision up to `revision` has been read (the barrier's event was seen).
  void covered_to(std::int64_t revision) { to_revision_ = revision; }
  /// etcd compacted the revisions before `revision`: receipts are known from there on only.
  void compacted_to(std::int64_t revision) {
    if (revision > from_revision_) from_revision_ = revision;
  }

  std::int64_t from_revision() const { return from_revision_; }
  std::int64_t to_revision() const { return to_revision_; }
  /// The lowest revision in (after_revision, to_revision()] of a receipt naming (id, fingerprint),
  /// or 0. Every matching receipt is considered: an id PostgreSQL handed out again may have an
  /// older receipt with the same fingerprint, at or below after_revision, that is not the row's.
  std::int64_t find(std::int64_t id, std::uint32_t fingerprint, std::int64_t after_revision) const;

 private:
  std::int64_t from_revision_;
  std::int64_t to_revision_ = 0;
  std::unordered_map<std::int64_t, std::vector<std::pair<std::uint32_t, std::int64_t>>> entries_;
};

/// What the receipts say about one row in doubt.
struct DoubtVerdict {
  enum class Kind {
    applied,      ///< a receipt names it: the write took effect at `revision`
    not_applied,  ///< the history from its attempt_revision up to the barrier names it nowhere
    unknown,      ///< the history that would tell was compacted away
  };
  Kind kind = Kind::unknown;
  std::int64_t revision = 0;
  /// not_applied because the barrier is at or below the row's attempt_revision: etcd went back in
  /// time (restored from an older snapshot), and its history as it now stands ends before the
  /// attempt. The attempt went to the etcd that was replaced and cannot land any more.
  bool etcd_went_back = false;
};

/// Decides `row` (with attempt_revision set) from `log`, read up to a barrier: applied, at the
/// lowest such revision, when a receipt after attempt_revision and up to the barrier names the
/// row's id and fingerprint; not applied when the log covers every revision after
/// attempt_revision without naming it, or when the barrier (log.to_revision()) is at or below
/// attempt_revision, which only a restored etcd gives (etcd_went_back); else unknown.
DoubtVerdict decide_in_doubt(const WalRow& row, const ReceiptLog& log);

/// The outcome of a row whose outcome cannot be known: failed, with a message that says so and
/// names the revisions whose history was compacted. It is never sent again.
WalOutcome unknown_outcome(const WalRow& row, const ReceiptLog& log);

}  // namespace etcd_sync
