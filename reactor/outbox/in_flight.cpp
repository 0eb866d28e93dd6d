#include "reactor/outbox/in_flight.hpp"

#include <algorithm>

namespace etcd_sync {

void InFlight::batch_started(const std::vector<Attempt>& attempts) {
  for (const auto& a : attempts) unsettled_.insert(a.row.id);
  ++batches_applying_;
}

void InFlight::batch_decided(const std::vector<Attempt>& attempts) {
  for (const auto& attempt : attempts)
    if (!attempt.outcome) unsettled_.erase(attempt.row.id);
}

void InFlight::doubt_if_suspect(WalRow& row) const {
  auto suspect = suspect_ids_.find(row.id);
  if (suspect == suspect_ids_.end()) return;
  row.attempt_revision = std::min(row.attempt_revision.value_or(suspect->second), suspect->second);
}

std::vector<const DecidedRow*> InFlight::written(const OutcomesWritten& written) {
  std::vector<const DecidedRow*> dropped;
  for (const auto& d : written.rows) {
    unsettled_.erase(d.row.id);
    if (written.abandoned || written.updated.count(d.row.id)) continue;
    suspect_ids_[d.row.id] = d.row.attempt_revision.value_or(d.row.claim_revision);
    dropped.push_back(&d);
  }
  return dropped;
}

InFlight::AfterWritten InFlight::after_written(const OutcomesWritten& written) const {
  if (written.more_pending || written.abandoned || batches_applying_ > 0 || waiting_for_room_) return AfterWritten::wake;
  if (unsettled_.empty()) return AfterWritten::idle;
  return AfterWritten::nothing;
}

}  // namespace etcd_sync
