#pragma once
// The outbox's barrier and the reading of its receipts (wal_txn.hpp, in_doubt.hpp), on etcd.
// A barrier is a put of the barrier key: every outbox Txn compares that key's mod_revision, so once
// the put is done no Txn sent before it can still take effect, and etcd's history up to the
// barrier's revision says for good which of them did.

#include "adapters/etcd_client.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/outbox/in_doubt.hpp"

#include <boost/asio/io_context.hpp>

#include <vector>

namespace etcd_sync {

/// What the barrier found for rows in doubt, in their order.
struct Resolution {
  std::vector<DoubtVerdict> verdicts;
  /// For an applied delete under postgres_wins: whether the key existed just before (nullopt: not
  /// known, e.g. compacted). Empty optional for every other row.
  std::vector<std::optional<bool>> key_existed;
  ReceiptLog log{0};
};

/// The SyncError(fenced) of a Txn whose leader compare failed.
SyncError deposed_error(const TxnFence& fence);

class Barrier {
 public:
  /// `keys` are the outbox's keys; `request_timeout` bounds the receipt watch.
  Barrier(asio::io_context& io, EtcdClient& etcd, OutboxKeys keys, std::chrono::milliseconds request_timeout);

  /// Puts the barrier key, if `fence`'s leader key still has its epoch; returns the barrier's new
  /// mod_revision (the revision of the put), which every later Txn is fenced with. Throws
  /// SyncError: fenced when this instance no longer leads, permission_denied when the etcd role may
  /// not write under election_prefix.
  asio::awaitable<std::int64_t> raise(const TxnFence& fence);

  /// Raises a barrier, then reads the receipts from the lowest attempt_revision + 1 up to it and
  /// decides every row (each with attempt_revision set). Overlapping calls run one after the
  /// other. Throws SyncError on an etcd failure (the rows stay in doubt).
  asio::awaitable<Resolution> resolve(const std::vector<const WalRow*>& rows, ConflictResolution resolution,
                                      const TxnFence& fence);

  /// The barrier revision the last raise() set (0 before the first).
  std::int64_t revision() const { return revision_; }

 private:
  asio::awaitable<ReceiptLog> read_receipts(std::int64_t from_revision, std::int64_t to_revision);
  asio::awaitable<std::optional<bool>> key_existed_before(const std::string& key, std::int64_t revision);

  asio::io_context& io_;
  EtcdClient& etcd_;
  OutboxKeys keys_;
  std::chrono::milliseconds request_timeout_;
  std::int64_t revision_ = 0;
  bool resolving_ = false;
  Broadcast resolved_;  ///< a resolve ended: the next one waiting may begin
};

}  // namespace etcd_sync
