#include "reactor/outbox/txn_group.hpp"

namespace etcd_sync {

void admit(Attempt& attempt, const std::string& prefix, const std::string& election_prefix) {
  if (auto reason = reject_reason(attempt.row, prefix, election_prefix)) {
    attempt.outcome = WalOutcome{WalStatus::failed, 0, *reason, false, false, false};
  } else if (attempt.row.attempt_revision) {
    attempt.in_doubt = true;
  }
}

const char* to_string(GroupNext next) {
  switch (next) {
    case GroupNext::done: return "done";
    case GroupNext::resend: return "resend";
    case GroupNext::fenced: return "fenced";
    case GroupNext::one_by_one: return "one_by_one";
    case GroupNext::outage: return "outage";
    case GroupNext::deposed: return "deposed";
  }
  return "unknown";
}

GroupNext after_txn_error(const std::vector<Attempt*>& group, const SyncError& error, int max_attempts) {
  switch (classify_txn_error(error)) {
    case TxnErrorKind::outage:
      // The Txn may or may not have been applied: the receipts will tell, after a barrier.
      for (auto* attempt : group) {
        attempt->in_doubt = true;
        if (!attempt->row.attempt_revision) attempt->row.attempt_revision = attempt->row.claim_revision;
      }
      return GroupNext::outage;
    case TxnErrorKind::row_permanent:
    case TxnErrorKind::row_transient:
      if (group.size() != 1) return GroupNext::one_by_one;
      group.front()->outcome = decide_row_error(group.front()->row, error, max_attempts);
      return GroupNext::done;
  }
  return GroupNext::one_by_one;
}

GroupNext after_txn_answer(std::vector<Attempt*>& group, TxnVerdict& verdict) {
  if (verdict.deposed) return GroupNext::deposed;
  if (verdict.fenced) return GroupNext::fenced;
  std::vector<Attempt*> again;
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i < verdict.outcomes.size() && verdict.outcomes[i])
      group[i]->outcome = std::move(*verdict.outcomes[i]);
    else
      again.push_back(group[i]);
  }
  if (again.size() == group.size()) return group.empty() ? GroupNext::done : GroupNext::one_by_one;
  group = std::move(again);
  return group.empty() ? GroupNext::done : GroupNext::resend;
}

}  // namespace etcd_sync
