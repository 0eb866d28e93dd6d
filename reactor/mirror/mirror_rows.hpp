#pragma once
// Turns etcd watch events and snapshot pages into rows of the `etcd` table. Pure: no I/O, so the
// byte-level rules (text vs. value_bytes, rejected keys) are unit-tested without servers.

#include "adapters/pg_connection.hpp"
#include "etcd/kv.pb.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace etcd_sync {

/// etcd's KeyValue metadata of a put, as etcd reports it (mvccpb.KeyValue).
struct KeyMeta {
  std::int64_t create_revision = 0;  ///< the revision that created the key (since its last delete)
  std::int64_t version = 0;          ///< puts since then, this one included
  std::int64_t lease = 0;            ///< the lease the key is bound to; 0 for none
  bool operator==(const KeyMeta&) const = default;
};

/// One row of `etcd`: a put (value or value_bytes set) or a tombstone (both NULL).
struct MirrorRow {
  std::string key;
  std::optional<std::string> value;        ///< the value when it is text (is_text)
  std::optional<std::string> value_bytes;  ///< the raw value otherwise
  std::int64_t revision = 0;               ///< mod_revision of the put, or the delete's revision
  bool tombstone = false;
  std::optional<KeyMeta> meta;             ///< a put's metadata; nullopt on tombstones
};

/// A key PostgreSQL text cannot hold; goes to etcd_sync_rejected with its raw bytes.
struct RejectedKey {
  std::string key_bytes;
  std::optional<std::string> value_bytes;
  std::int64_t revision = 0;
  bool tombstone = false;
  std::string reason;
};

/// The events of one or more watch responses, applied in one transaction with the checkpoint.
class MirrorBatch {
 public:
  /// Adds a PUT or DELETE event; its key and value move into the row.
  void add_event(mvccpb::Event event);
  /// Moves the batch's revision forward without rows (a progress notification at `revision`).
  void advance_to(std::int64_t revision);

  bool empty() const { return rows_.empty() && rejected_.empty() && revision_ == 0; }
  std::int64_t revision() const { return revision_; }  ///< highest revision the batch covers
  const std::vector<MirrorRow>& rows() const { return rows_; }
  const std::vector<RejectedKey>& rejected() const { return rejected_; }
  std::int64_t puts() const { return puts_; }
  std::int64_t deletes() const { return deletes_; }
  std::size_t events() const { return rows_.size() + rejected_.size(); }

  /// The statements that apply the batch and move the checkpoint for `prefix` (effective_prefix
  /// form) to revision(), then `fence` when given (the leader's check, last before COMMIT); run
  /// them in one transaction (a pipeline does).
  std::vector<PgStatement> statements(const std::string& prefix, const std::optional<PgStatement>& fence = {}) const;

 private:
  std::vector<MirrorRow> rows_;
  std::vector<RejectedKey> rejected_;
  std::int64_t revision_ = 0;
  std::int64_t puts_ = 0;
  std::int64_t deletes_ = 0;
};

/// The watch events read in one go, cut into transactions of at most `max_events` events each
/// ([sync] batch_size). Cuts fall only between revisions: the events of one revision (one etcd Txn)
/// always share a transaction, which then may hold more than `max_events`.
class MirrorBatches {
 public:
  explicit MirrorBatches(std::size_t max_events) : max_events_(max_events < 1 ? 1 : max_events) {}
  void add_event(mvccpb::Event event);
  /// A progress notification at `revision`: the last transaction's checkpoint moves there.
  void advance_to(std::int64_t revision);

  bool empty() const { return batches_.empty(); }
  const std::vector<MirrorBatch>& batches() const { return batches_; }
  /// The highest revision covered (the checkpoint once all are applied); 0 when empty.
  std::int64_t revision() const { return batches_.empty() ? 0 : batches_.back().revision(); }
  std::size_t events() const;
  /// Every transaction's statements (MirrorBatch::statements, each with `fence`) in one list for
  /// one pipeline; with several transactions each is wrapped in BEGIN ... COMMIT, so each commits
  /// on its own. `first` and `end` choose the transactions [first, end) (all by default).
  std::vector<PgStatement> statements(const std::string& prefix, const std::optional<PgStatement>& fence = {},
                                      std::size_t first = 0, std::size_t end = SIZE_MAX) const;

  /// A backlog copied rather than inserted: runs [first, end) of consecutive transactions, each
  /// run holding at most `max_events` events (one transaction larger than that is a run alone), to
  /// be written as one COPY transaction each. Cuts stay between revisions, since the transactions'
  /// are.
  std::vector<std::pair<std::size_t, std::size_t>> copy_runs(std::size_t max_events) const;
  /// What follows the COPY of the rows of transactions [first, end) in its transaction: the
  /// rejected keys' INSERTs, the checkpoint at the run's highest revision, `fence`, and COMMIT.
  std::vector<PgStatement> after_copy(const std::string& prefix, const std::optional<PgStatement>& fence,
                                      std::size_t first, std::size_t end) const;

 private:
  std::size_t max_events_;
  std::vector<MirrorBatch> batches_;
};

/// Splits a key/value into a row or a rejected key. `value` is ignored for tombstones.
/// Returns the row, or nullopt after filling `rejected` (key not valid UTF-8 or has NUL).
std::optional<MirrorRow> make_row(std::string key, std::string value, std::int64_t revision, bool tombstone,
                                  RejectedKey& rejected);
/// The same from etcd's KeyValue (a watch event's, a snapshot page's), with its metadata on a put.
std::optional<MirrorRow> make_row(const mvccpb::KeyValue& kv, bool tombstone, RejectedKey& rejected);
/// The same, moving the key and value out of `kv` (a watch event's, consumed) instead of copying.
std::optional<MirrorRow> make_row(mvccpb::KeyValue&& kv, bool tombstone, RejectedKey& rejected);

/// The columns of `etcd` a COPY line holds, in append_copy_line's order.
inline constexpr const char* kCopyColumns = "key, value, value_bytes, revision, tombstone, create_revision, version, lease";

/// "COPY <table> (kCopyColumns) FROM STDIN", after `before` (say, "BEGIN; ") in the same string.
std::string copy_in_sql(const std::string& table, const std::string& before = {});

/// Appends `row` as one line of COPY text format for kCopyColumns (NULL metadata on a tombstone).
void append_copy_line(std::string& chunk, const MirrorRow& row);

/// The INSERT for `rows` (none when empty): one fixed statement over parallel arrays, so it is
/// prepared once per connection whatever the batch size, skipping (key, revision) pairs already
/// present.
void append_row_inserts(const std::vector<MirrorRow>& rows, std::vector<PgStatement>& out);
/// INSERT statements for rejected keys.
void append_rejected_inserts(const std::vector<RejectedKey>& rejected, std::vector<PgStatement>& out);
/// The checkpoint upsert: never moves backwards.
PgStatement checkpoint_statement(const std::string& prefix, std::int64_t revision);

}  // namespace etcd_sync
