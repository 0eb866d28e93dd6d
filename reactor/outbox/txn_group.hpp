#pragma once
// What the outbox does with the rows of a claim on their way through etcd: how a claimed row enters
// its batch, and after each Txn of a group of rows, which rows are decided and what is sent next
// (the same group again, each row alone, nothing: an outage or deposed). Pure: the caller sends
// the Txns; unit-tested without servers.

#include "adapters/errors.hpp"
#include "reactor/outbox/wal_txn.hpp"

#include <optional>
#include <string>
#include <vector>

namespace etcd_sync {

/// One row of a claim on its way through etcd.
struct Attempt {
  WalRow row;
  std::optional<WalOutcome> outcome;  ///< decided: the outcome to write; nullopt: not yet
  bool in_doubt = false;  ///< an attempt may have reached etcd: decide it from the receipts first
};

/// A claimed row enters its batch (its attempt_revision already lowered for a suspect id,
/// InFlight::doubt_if_suspect): a row etcd must not take (reject_reason against `prefix` and
/// `election_prefix`) is failed at once, a row with an attempt_revision is in doubt, any other is
/// to be sent.
void admit(Attempt& attempt, const std::string& prefix, const std::string& election_prefix);

/// What a group of rows (distinct keys, sent in one Txn) does after that Txn.
enum class GroupNext {
  done,        ///< every row of the group has an outcome, or is in doubt: nothing more to send
  resend,      ///< send the group again as one Txn (it now holds only the rows still undecided)
  fenced,      ///< the barrier moved (TxnVerdict::barrier_revision): nothing was applied; raise
               ///< the fence to it and send the group again
  one_by_one,  ///< send each row of the group alone: each gets its own answer
  outage,      ///< etcd is unreachable: every row is in doubt now; report the outage, send nothing
  deposed,     ///< another instance leads: nothing was applied, nothing more is sent
};
/// The step's name ("one_by_one"), for logs and test messages.
const char* to_string(GroupNext next);

/// etcd failed the group's Txn with `error` (classify_txn_error). An outage leaves every row in
/// doubt, with attempt_revision set to its claim_revision unless it had one (the Txn may or may
/// not have landed; its attempts are not spent). A refusal (a row etcd cannot take, no permission
/// for a key, limits below etcd's defaults) decides a lone row (decide_row_error with
/// `max_attempts`) and splits a larger group one_by_one.
GroupNext after_txn_error(const std::vector<Attempt*>& group, const SyncError& error, int max_attempts);

/// etcd answered the group's Txn; `verdict` is decide_txn of the group's rows, in order (its
/// outcomes are moved out). Deposed and fenced are returned as they are. Otherwise each row with
/// an outcome takes it and leaves `group`: done when none is left, resend when some are (they
/// conflicted with none; another row's failed compare stopped the Txn), one_by_one when no row was
/// decided (no conflict told apart; `group` unchanged).
GroupNext after_txn_answer(std::vector<Attempt*>& group, TxnVerdict& verdict);

}  // namespace etcd_sync
