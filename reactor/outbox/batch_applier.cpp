#include "reactor/outbox/batch_applier.hpp"

#include "reactor/loop/failpoint.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"

#include <algorithm>

namespace etcd_sync {

BatchApplier::BatchApplier(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats,
                           const Fencing& fencing, EngineStatus<OutboxState>& status, InFlight& in_flight,
                           std::function<void(const SyncError&)> on_fenced)
    : io_(io),
      etcd_(etcd),
      stats_(stats),
      barrier_(io, etcd, outbox_keys(config.ha.election_prefix), config.etcd.request_timeout),
      etcd_outage_(io, etcd, status),
      in_flight_(in_flight),
      on_fenced_(std::move(on_fenced)) {
  fence_.keys = outbox_keys(config.ha.election_prefix);
  if (fencing.term) {
    fence_.leader_key = fencing.term->key;
    fence_.epoch = fencing.term->epoch;
  }
}

void BatchApplier::depose() {
  deposed_ = true;
  etcd_outage_.wake();
}

void BatchApplier::stop() {
  stopping_ = true;
  etcd_outage_.stop();
}

asio::awaitable<void> BatchApplier::raise_barrier() {
  co_await etcd_.ensure_connected();
  fence_.barrier_revision = co_await barrier_.raise(fence_);
  if (stats_.etcd_revision < fence_.barrier_revision) stats_.etcd_revision = fence_.barrier_revision;
  etcd_outage_.working();
  log_info("outbox barrier raised", {{"component", "outbox"}, {"barrier_revision", fence_.barrier_revision}});
}

asio::awaitable<void> BatchApplier::decide(ClaimedBatch& batch) {
  const Config& config = *batch.config;
  for (auto& attempt : batch.attempts) {
    in_flight_.doubt_if_suspect(attempt.row);
    admit(attempt, config.etcd.prefix, config.ha.election_prefix);
  }
  for (;;) {
    std::vector<Attempt*> doubtful, fresh;
    for (auto& attempt : batch.attempts) {
      if (attempt.outcome) continue;
      (attempt.in_doubt ? doubtful : fresh).push_back(&attempt);
    }
    if (doubtful.empty() && fresh.empty()) break;
    if (deposed_) break;  // the new leader decides these rows from the receipts
    const bool ready = co_await etcd_outage_.ready();
    if (!ready) break;
    if (!doubtful.empty()) {
      co_await resolve_in_doubt(batch, std::move(doubtful));
      continue;  // rows decided "not applied" are fresh now
    }
    std::vector<const WalRow*> rows;
    for (auto* attempt : fresh) rows.push_back(&attempt->row);
    Gate groups(io_);
    for (const auto& indices : group_rows_for_txns(rows, config.sync.conflict_resolution)) {
      std::vector<Attempt*> group;
      for (auto i : indices) group.push_back(fresh[i]);
      spawn(io_, groups, send_group(batch, std::move(group)), "outbox Txn");
    }
    co_await groups.close();
  }
}

asio::awaitable<void> BatchApplier::resolve_in_doubt(const ClaimedBatch& batch, std::vector<Attempt*> rows) {
  const Config& config = *batch.config;
  std::vector<const WalRow*> wal_rows;
  for (auto* attempt : rows) wal_rows.push_back(&attempt->row);
  try {
    auto resolution = co_await barrier_.resolve(wal_rows, config.sync.conflict_resolution, fence_);
    fence_.barrier_revision = std::max(fence_.barrier_revision, barrier_.revision());
    etcd_outage_.working();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      auto& attempt = *rows[i];
      const auto& verdict = resolution.verdicts[i];
      LogFields fields{{"component", "outbox"}, {"wal_id", attempt.row.id}, {"key", attempt.row.key},
                       {"attempt_revision", *attempt.row.attempt_revision}};
      switch (verdict.kind) {
        case DoubtVerdict::Kind::applied:
          attempt.outcome = applied_outcome(attempt.row, verdict.revision, resolution.key_existed[i]);
          fields.push_back({"revision", verdict.revision});
          log_info("etcd_wal row in doubt had been applied", fields);
          break;
        case DoubtVerdict::Kind::not_applied:
          attempt.in_doubt = false;
          log_debug("etcd_wal row in doubt had not been applied; sending it", fields);
          break;
        case DoubtVerdict::Kind::unknown:
          attempt.outcome = unknown_outcome(attempt.row, resolution.log);
          break;
      }
      in_flight_.doubt_decided(attempt.row.id);
    }
  } catch (const SyncError& error) {
    if (error.kind() == ErrorKind::permission_denied && error.peer() == Peer::etcd) throw;
    if (error.kind() == ErrorKind::fenced) {
      on_fenced_(error);
    } else {
      etcd_outage_.failed(error, config.sync.retry);
    }
  }
}

asio::awaitable<void> BatchApplier::send_group(const ClaimedBatch& batch, std::vector<Attempt*> group) {
  const Config& config = *batch.config;
  const auto resolution = config.sync.conflict_resolution;
  while (!group.empty() && !stopping_ && !deposed_) {
    std::vector<const WalRow*> rows;
    for (auto* attempt : group) rows.push_back(&attempt->row);
    const TxnFence fence = fence_;
    std::optional<SyncError> failure;
    etcdserverpb::TxnResponse response;
    try {
      auto started = std::chrono::steady_clock::now();
      failpoint("outbox.before_txn");
      response = co_await etcd_.txn(build_txn(rows, resolution, fence));
      failpoint("outbox.after_txn");
      stats_.wal_apply_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      etcd_outage_.working();
      if (response.header().revision() > stats_.etcd_revision) stats_.etcd_revision = response.header().revision();
    } catch (const SyncError& error) {
      failure = error;
    }
    // What the answer or the error means for the group: txn_group.hpp.
    GroupNext next = GroupNext::done;
    TxnVerdict verdict;
    if (failure) {
      next = after_txn_error(group, *failure, config.sync.retry.max_attempts);
    } else {
      verdict = decide_txn(rows, response, resolution, fence);
      next = after_txn_answer(group, verdict);
    }
    switch (next) {
      case GroupNext::done:
        co_return;
      case GroupNext::resend:
        continue;  // without the rows decided
      case GroupNext::fenced:
        // A barrier moved the fence (this outbox's own, deciding rows in doubt): nothing was
        // applied; send again with the new one.
        fence_.barrier_revision = std::max(fence_.barrier_revision, verdict.barrier_revision);
        continue;
      case GroupNext::one_by_one:
        for (auto* attempt : group) co_await send_group(batch, std::vector<Attempt*>(1, attempt));
        co_return;
      case GroupNext::outage:
        // The rows are in doubt: the receipts will tell, after a barrier.
        etcd_outage_.failed(*failure, config.sync.retry);
        co_return;
      case GroupNext::deposed:
        on_fenced_(deposed_error(fence));  // nothing was applied; the new leader decides these rows
        co_return;
    }
  }
}

}  // namespace etcd_sync
