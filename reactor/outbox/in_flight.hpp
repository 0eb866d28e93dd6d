#pragma once
// The outbox's claimed rows between their claim and their written outcome: which ids are
// unsettled (a claim skips them), how many batches are in etcd, and which ids are suspect (an
// outcome written for them matched no row). Pure: events in (a batch claimed or ended, outcomes
// written), decisions out (how many rows the next claim may take, whether the claim loop wakes, a
// claimed row in doubt); unit-tested without servers.

#include "reactor/outbox/claim_schedule.hpp"
#include "reactor/outbox/outcome_writer.hpp"
#include "reactor/outbox/txn_group.hpp"

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace etcd_sync {

class InFlight {
 public:
  /// What the claim loop does once outcomes were written (after_written).
  enum class AfterWritten {
    wake,     ///< wake it: rows may be claimed now (the next rows of these keys, retried rows, room)
    idle,     ///< nothing is in flight: the outbox is idle
    nothing,  ///< rows are still in flight; their outcomes will wake it
  };

  /// Claimed rows whose outcome is not yet written: the next claim skips them.
  const std::unordered_set<std::int64_t>& unsettled() const { return unsettled_; }
  /// Whether no claimed row waits for its outcome.
  bool settled() const { return unsettled_.empty(); }
  /// Batches in etcd now.
  int batches_applying() const { return batches_applying_; }

  /// How many rows the next claim may take (ClaimSchedule::claim_limit, up to `batch_size`, with
  /// the last claim `backed_up` or not); 0: wait until a batch ends or outcomes are written.
  std::int64_t claim_limit(int batch_size, bool backed_up) const {
    return ClaimSchedule::claim_limit(batch_size, unsettled_.size(), batches_applying_, backed_up);
  }
  /// A batch of `attempts` was claimed and goes to etcd.
  void batch_started(const std::vector<Attempt>& attempts);
  /// A batch handed its decided rows to the outcome writer; each row it left without an outcome
  /// (stopping) stays pending and is no longer unsettled.
  void batch_decided(const std::vector<Attempt>& attempts);
  /// A batch's coroutine ended (decided, or thrown): it is no longer in etcd.
  void batch_ended() { --batches_applying_; }
  /// The claim loop waits for outcomes to free room (claim_limit was 0), or no longer does.
  void waiting_for_room(bool waiting) { waiting_for_room_ = waiting; }

  /// A claimed row whose id is suspect may be the row whose outcome was dropped: its
  /// attempt_revision becomes the lower of its own and the one that outcome was for, so it is in
  /// doubt and decided by its receipt (a Txn that did land is not sent twice).
  void doubt_if_suspect(WalRow& row) const;
  /// Row `id` in doubt was decided from the receipts: it is no longer suspect.
  void doubt_decided(std::int64_t id) { suspect_ids_.erase(id); }
  /// Whether outcomes for `id` were dropped and it has not been decided since.
  bool suspect(std::int64_t id) const { return suspect_ids_.count(id) != 0; }

  /// Outcomes were written (or abandoned): their rows are settled. Each row whose outcome matched
  /// no row (gone or changed since its claim: a PostgreSQL failover that lost it, or an application
  /// that edited it; a PostgreSQL failover may hand the id out again) makes its id suspect, with
  /// its attempt_revision (or claim_revision); those rows are returned, in order, for the log.
  std::vector<const DecidedRow*> written(const OutcomesWritten& written);
  /// After written(): whether the claim loop wakes, given whether `written` said more rows of its
  /// keys are pending or the write was abandoned.
  AfterWritten after_written(const OutcomesWritten& written) const;

 private:
  std::unordered_set<std::int64_t> unsettled_;  ///< claimed rows whose outcome is not yet written
  /// Row ids whose outcome matched no row when written, with the attempt_revision they had.
  std::unordered_map<std::int64_t, std::int64_t> suspect_ids_;
  int batches_applying_ = 0;
  bool waiting_for_room_ = false;  ///< the claim loop waits for outcomes to free room
};

}  // namespace etcd_sync
