#include "reactor/mirror/timeline.hpp"

#include <cstdio>

namespace etcd_sync {

std::string cluster_id_text(std::uint64_t cluster_id) {
  char text[17];
  std::snprintf(text, sizeof text, "%llx", static_cast<unsigned long long>(cluster_id));
  return text;
}

TimelineSign read_timeline(const std::optional<std::string>& recorded, std::int64_t checkpoint,
                           std::uint64_t cluster_id, std::int64_t revision) {
  if (cluster_id != 0 && recorded && *recorded != cluster_id_text(cluster_id)) return TimelineSign::new_cluster;
  if (revision > 0 && revision < checkpoint) return TimelineSign::behind;
  if (!recorded && cluster_id != 0) return TimelineSign::unrecorded;
  return TimelineSign::same;
}

bool history_holds_put(const MirroredRow& row, const mvccpb::KeyValue* kv) {
  if (!kv || row.tombstone) return false;
  if (kv->key() != row.key || kv->mod_revision() != row.revision || kv->value() != row.value) return false;
  if (row.create_revision && *row.create_revision != kv->create_revision()) return false;
  if (row.version && *row.version != kv->version()) return false;
  if (row.lease && *row.lease != kv->lease()) return false;
  return true;
}

bool history_holds_delete(const mvccpb::KeyValue* before, const mvccpb::KeyValue* at) {
  return before != nullptr && at == nullptr;
}

std::optional<std::int64_t> KeptThroughSearch::next() const {
  if (searched_ >= high_) return std::nullopt;
  return searched_ + (high_ - searched_ + 1) / 2;  // in (searched_, high_]
}

void KeptThroughSearch::result(std::int64_t probe, std::int64_t rows_at, RowsInHistory what) {
  ++probes_;
  if (rows_at <= searched_) {  // no mirrored rows in (searched_, probe]: look higher
    searched_ = probe;
    return;
  }
  switch (what) {
    case RowsInHistory::held:
      held_ = rows_at;
      searched_ = probe;
      break;
    case RowsInHistory::compacted:
      // Not provable, and neither is anything below: the kept point stays where it was proven.
      if (rows_at > compacted_) compacted_ = rows_at;
      searched_ = probe;
      break;
    case RowsInHistory::differ:
      high_ = rows_at - 1;
      break;
  }
}

}  // namespace etcd_sync
