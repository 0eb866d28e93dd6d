#include "reactor/outbox/in_doubt.hpp"

namespace etcd_sync {

void ReceiptLog::add(std::int64_t revision, std::string_view value) {
  auto entries = parse_receipt(value);
  if (!entries) return;
  for (const auto& entry : *entries) entries_[entry.id].push_back({entry.fingerprint, revision});
}

std::int64_t ReceiptLog::find(std::int64_t id, std::uint32_t fingerprint, std::int64_t after_revision) const {
  auto it = entries_.find(id);
  if (it == entries_.end()) return 0;
  std::int64_t found = 0;
  for (const auto& [fp, revision] : it->second) {
    if (fp != fingerprint || revision <= after_revision || revision > to_revision_) continue;
    if (found == 0 || revision < found) found = revision;
  }
  return found;
}

DoubtVerdict decide_in_doubt(const WalRow& row, const ReceiptLog& log) {
  const std::int64_t since = row.attempt_revision.value_or(0);
  if (log.to_revision() > 0 && since >= log.to_revision()) return {DoubtVerdict::Kind::not_applied, 0, true};
  // Evidence is a receipt in (attempt_revision, barrier]. One at or below attempt_revision is older
  // than every attempt of this row: another row that had this id and fingerprint before a
  // PostgreSQL failover handed the id out again. One past the barrier is from a Txn sent after it,
  // as no attempt sent before the barrier can land after it.
  if (auto revision = log.find(row.id, row_fingerprint(row), since); revision != 0)
    return {DoubtVerdict::Kind::applied, revision};
  if (log.from_revision() <= since + 1 && log.to_revision() > since) return {DoubtVerdict::Kind::not_applied, 0};
  return {DoubtVerdict::Kind::unknown, 0};
}

WalOutcome unknown_outcome(const WalRow& row, const ReceiptLog& log) {
  WalOutcome outcome;
  outcome.status = WalStatus::failed;
  outcome.error_message =
      "outcome unknown: an attempt may have reached etcd after revision " + std::to_string(row.attempt_revision.value_or(0)) +
      ", but etcd compacted the history that would tell (revisions before " + std::to_string(log.from_revision()) +
      ") before etcd-sync could read it; the row is not sent again, check key \"" + row.key + "\" in etcd";
  return outcome;
}

}  // namespace etcd_sync
