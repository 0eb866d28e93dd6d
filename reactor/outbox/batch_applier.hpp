#pragma once
// The etcd side of the outbox: decides every row of a claimed batch, rows in doubt first (from
// etcd's receipts, read up to a barrier: barrier.hpp, in_doubt.hpp), then the others in as few
// fenced Txns as etcd's limits allow (wal_txn.hpp: where a row becomes a Txn; txn_group.hpp: what
// each answer means for the group), waiting out etcd outages (etcd_outage.hpp). Txns of one batch
// overlap; so do batches.

#include "adapters/etcd_client.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/outbox/barrier.hpp"
#include "reactor/outbox/etcd_outage.hpp"
#include "reactor/outbox/in_flight.hpp"
#include "reactor/outbox/outbox_state.hpp"
#include "reactor/outbox/txn_group.hpp"
#include "reactor/outbox/wal_txn.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace etcd_sync {

/// The rows of one claim and the configuration snapshot they were claimed under (kept until they
/// are decided).
struct ClaimedBatch {
  std::shared_ptr<const Config> config;
  std::vector<Attempt> attempts;
};

class BatchApplier {
 public:
  /// `config` gives the outbox's keys ([ha] election_prefix) and etcd's request timeout; `fencing`
  /// the term whose election key fences every Txn (none: no leader compare). Outages are reported
  /// in `status` (the outbox's); rows decided in doubt are no longer suspect in `in_flight`.
  /// `on_fenced` runs when another instance is found to lead (a deposed Txn or barrier); it is
  /// expected to call depose().
  BatchApplier(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, const Fencing& fencing,
               EngineStatus<OutboxState>& status, InFlight& in_flight,
               std::function<void(const SyncError&)> on_fenced);

  /// Whether the first barrier has been raised (raise_barrier()).
  bool barrier_raised() const { return fence_.barrier_revision != 0; }
  /// Raises the first barrier: attempts a predecessor (a crashed run, a deposed leader) still has on
  /// their way to etcd can no longer land; rows it left in doubt are decided from receipts. Throws
  /// SyncError (etcd unreachable; fenced: this term's election key is gone; permission_denied).
  asio::awaitable<void> raise_barrier();
  /// Decides every row of `batch`: admits each (InFlight::doubt_if_suspect, admit), decides those
  /// in doubt from the receipts, then sends the others, waiting out etcd outages, until each has an
  /// outcome or the outbox stops or is deposed. Rows left without an outcome stay pending, in
  /// doubt: the next start (or the new leader) decides them. Throws SyncError(permission_denied)
  /// when the etcd role may not read the outbox's keys; outages and fencing are handled.
  asio::awaitable<void> decide(ClaimedBatch& batch);

  /// A call to etcd failed with `error` (an outage): EtcdOutageGate::failed.
  void etcd_failed(const SyncError& error, const RetryConfig& retry) { etcd_outage_.failed(error, retry); }
  /// Waits out an etcd outage (EtcdOutageGate::ready); false when stopping.
  asio::awaitable<bool> etcd_ready() { return etcd_outage_.ready(); }

  /// Whether another instance leads: nothing more is sent.
  bool deposed() const { return deposed_; }
  /// Another instance leads: no Txn is sent from now on, and waits for etcd end.
  void depose();
  /// The outbox stops: no Txn is sent from now on (those in flight finish), and waits for etcd end.
  void stop();

 private:
  /// Decides `rows` (in doubt) from the receipts: applied, unknown, or not applied (sent next).
  asio::awaitable<void> resolve_in_doubt(const ClaimedBatch& batch, std::vector<Attempt*> rows);
  /// Sends rows with distinct keys in one Txn (again without conflicting or refused rows) until
  /// each has an outcome, is in doubt (an outage), or the outbox stops or is deposed.
  asio::awaitable<void> send_group(const ClaimedBatch& batch, std::vector<Attempt*> group);

  asio::io_context& io_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  Barrier barrier_;
  TxnFence fence_;
  EtcdOutageGate etcd_outage_;  ///< batches wait out etcd outages here
  InFlight& in_flight_;
  std::function<void(const SyncError&)> on_fenced_;
  bool deposed_ = false;  ///< fenced: nothing more is sent
  bool stopping_ = false;
};

}  // namespace etcd_sync
