#pragma once
// Whether etcd went back in time under the mirror (restored from a snapshot), and how far back the
// mirror's rows still match etcd's history. Pure: the decisions are unit-tested without servers;
// the Mirror does the reads (README "When a server goes back in time").

#include "etcd/kv.pb.h"

#include <cstdint>
#include <optional>
#include <string>

namespace etcd_sync {

/// etcd's cluster id as etcdctl prints it: lowercase hex, no leading zeros.
std::string cluster_id_text(std::uint64_t cluster_id);

/// What one etcd response header says about the timeline the checkpoint belongs to.
enum class TimelineSign {
  same,         ///< the recorded cluster, at or above the checkpoint
  unrecorded,   ///< no cluster id recorded with the checkpoint yet: record this one
  new_cluster,  ///< another cluster id than the checkpoint's: etcd was restored (or replaced)
  behind,       ///< a revision below the checkpoint: a restore, or a member that lags; a
                ///< linearizable read tells them apart (a lagging member is made to catch up first)
};

/// Reads a header: `recorded` is the cluster id stored with the checkpoint (nullopt: none yet),
/// `checkpoint` the mirrored revision; `cluster_id` and `revision` come from the header. A new
/// cluster id wins over a low revision; an unrecorded id with a revision below the checkpoint is
/// `behind`. A 0 says nothing: etcd leaves the header's revision 0 on a watch response that
/// reports a compaction, and a header that is not set has both 0.
TimelineSign read_timeline(const std::optional<std::string>& recorded, std::int64_t checkpoint,
                           std::uint64_t cluster_id, std::int64_t revision);

/// What etcd's history says about the mirror's rows at one revision.
enum class RowsInHistory {
  held,       ///< every row probed at that revision is in etcd's history, value and metadata alike
  differ,     ///< some row is not: etcd's history went another way at or before that revision
  compacted,  ///< etcd compacted that revision: its history cannot tell
};

/// One row of `etcd` as the rollback check reads it.
struct MirroredRow {
  std::string key;
  std::string value;  ///< the value's bytes (from `value` or `value_bytes`); empty on a tombstone
  std::int64_t revision = 0;
  bool tombstone = false;
  std::optional<std::int64_t> create_revision, version, lease;  ///< NULL on rows older than these columns
};

/// Whether etcd's history holds the put `row`: `kv` is etcd's answer to a Range of row.key at
/// row.revision (nullptr: no such key then). It must have mod_revision == row.revision, the same
/// value, and the same create_revision, version and lease where the row recorded them.
bool history_holds_put(const MirroredRow& row, const mvccpb::KeyValue* kv);

/// Whether etcd's history holds a delete of a key at some revision: `before` is a Range of the
/// key at revision - 1 (nullptr: absent), `at` one at the revision itself.
bool history_holds_delete(const mvccpb::KeyValue* before, const mvccpb::KeyValue* at);

/// The search for the highest mirrored revision whose rows etcd's history still holds (the
/// "kept through" revision): rows above it belong to an abandoned timeline. Both timelines share
/// every revision up to the snapshot etcd was restored from, and none after it, so whether a
/// revision's rows are held is true up to a point and false above it: a binary search over the
/// revisions in [1, upper] finds that point in about log2(upper) probes.
///
/// Use: while next() gives a revision m, look up r, the highest revision at or below m that has
/// mirrored puts (0 when none; tombstones prove nothing, see Mirror::mirrored_rows_at_or_below),
/// and report it with result(m, r, what etcd says about r; ignored when r is 0). Then kept_through() is the answer. A compacted revision cannot be checked: it and
/// everything below count as not proven, so rows there are set apart too (the mirror then resyncs
/// from a snapshot); compacted_through() says how far that reached.
class KeptThroughSearch {
 public:
  /// `upper`: the highest revision that can be held, the lower of etcd's current revision and the
  /// checkpoint (revisions).
  explicit KeptThroughSearch(std::int64_t upper) : high_(upper) {}

  /// The revision to look at next, or nullopt when the search is over.
  std::optional<std::int64_t> next() const;
  /// Records the probe of next() == `probe`: `rows_at` is the highest mirrored revision at or
  /// below it (0: none), `what` etcd's answer for the rows there.
  void result(std::int64_t probe, std::int64_t rows_at, RowsInHistory what);
  /// The highest mirrored revision proven held (0: none): rows above it are abandoned.
  std::int64_t kept_through() const { return held_; }
  /// The highest revision found compacted (0: none).
  std::int64_t compacted_through() const { return compacted_; }
  /// Whether rows at or below compacted_through() are set apart unproven (a compacted revision
  /// above every held one).
  bool unproven() const { return compacted_ > held_; }
  /// Probes made so far.
  int probes() const { return probes_; }

 private:
  std::int64_t held_ = 0;       // every mirrored revision at or below is held
  std::int64_t searched_ = 0;   // no undecided mirrored revision at or below
  std::int64_t high_;           // every mirrored revision above differs (or lies above upper)
  std::int64_t compacted_ = 0;
  int probes_ = 0;
};

}  // namespace etcd_sync
