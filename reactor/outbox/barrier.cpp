#include "reactor/outbox/barrier.hpp"

#include "adapters/etcd_watch.hpp"
#include "reactor/loop/deadline.hpp"
#include "reactor/loop/logging.hpp"

#include <algorithm>
#include <limits>

namespace etcd_sync {

Barrier::Barrier(asio::io_context& io, EtcdClient& etcd, OutboxKeys keys, std::chrono::milliseconds request_timeout)
    : io_(io), etcd_(etcd), keys_(std::move(keys)), request_timeout_(request_timeout), resolved_(io) {}

asio::awaitable<std::int64_t> Barrier::raise(const TxnFence& fence) {
  auto response = co_await etcd_.txn(barrier_txn(fence));
  if (!response.succeeded()) throw deposed_error(fence);
  revision_ = std::max(revision_, response.header().revision());
  co_return response.header().revision();
}

SyncError deposed_error(const TxnFence& fence) {
  return SyncError(ErrorKind::fenced,
                   "fenced: the election key " + fence.leader_key + " of epoch " + std::to_string(fence.epoch) +
                       " is gone; another instance leads",
                   Peer::etcd);
}

asio::awaitable<ReceiptLog> Barrier::read_receipts(std::int64_t from_revision, std::int64_t to_revision) {
  ReceiptLog log(from_revision);
  std::int64_t start = from_revision;
  for (;;) {
    auto stream = etcd_.open_watch();
    etcdserverpb::WatchCreateRequest create;
    create.set_key(keys_.barrier);
    create.set_range_end(keys_.receipt + '\0');  // the barrier and the receipt, nothing else
    create.set_start_revision(start);
    co_await stream->start(create);
    std::optional<std::int64_t> restart_at;
    bool done = false;
    while (!done && !restart_at) {
      std::optional<etcdserverpb::WatchResponse> response;
      {
        Deadline quiet(io_, request_timeout_, [&stream] { stream->cancel(); });
        response = co_await stream->read();
      }
      if (!response) break;
      if (response->compact_revision() > 0) {
        // The receipts before compact_revision are gone: rows attempted before it cannot be known.
        log.compacted_to(response->compact_revision());
        restart_at = response->compact_revision();
        break;
      }
      if (response->canceled()) break;
      for (const auto& event : response->events()) {
        const auto& kv = event.kv();
        if (kv.key() == keys_.receipt && event.type() == mvccpb::Event::PUT) log.add(kv.mod_revision(), kv.value());
        if (kv.key() == keys_.barrier && kv.mod_revision() >= to_revision) done = true;
      }
    }
    stream->cancel();
    auto ended = co_await stream->finish();
    if (done) {
      log.covered_to(to_revision);
      co_return log;
    }
    if (!restart_at) throw SyncError(ErrorKind::transient, std::string("reading the outbox receipts: ") + ended.what(), Peer::etcd);
    start = *restart_at;
  }
}

asio::awaitable<std::optional<bool>> Barrier::key_existed_before(const std::string& key, std::int64_t revision) {
  etcdserverpb::RangeRequest range;
  range.set_key(key);
  range.set_revision(revision - 1);
  range.set_count_only(true);
  try {
    auto response = co_await etcd_.range(range);
    co_return response.count() > 0;
  } catch (const SyncError& error) {
    if (error.kind() != ErrorKind::compacted) throw;
  }
  co_return std::nullopt;
}

asio::awaitable<Resolution> Barrier::resolve(const std::vector<const WalRow*>& rows, ConflictResolution resolution,
                                             const TxnFence& fence) {
  while (resolving_) co_await resolved_.wait();
  resolving_ = true;
  struct Done {
    Barrier& barrier;
    ~Done() {
      barrier.resolving_ = false;
      barrier.resolved_.notify_all();
    }
  } done{*this};

  const std::int64_t barrier = co_await raise(fence);
  // Receipts from the lowest attempt on. An attempt at or above the barrier was made on an etcd
  // that went back in time since (decide_in_doubt): its history now ends below the attempt.
  std::int64_t since = std::numeric_limits<std::int64_t>::max();
  std::int64_t went_back = 0;
  for (const auto* row : rows) {
    const std::int64_t attempt = row->attempt_revision.value_or(0);
    if (attempt < barrier)
      since = std::min(since, attempt);
    else
      ++went_back;
  }
  Resolution out;
  if (since < barrier) {
    out.log = co_await read_receipts(since + 1, barrier);
  } else {
    out.log = ReceiptLog(barrier + 1);
    out.log.covered_to(barrier);
  }
  if (went_back > 0)
    log_warn("etcd's revision is below the attempts of rows in doubt: etcd went back in time (restored from a "
             "snapshot); those attempts are not in etcd's history as it now stands, and the rows are sent again",
             {{"component", "outbox"}, {"rows", went_back}, {"barrier_revision", barrier}});
  for (const auto* row : rows) {
    out.verdicts.push_back(decide_in_doubt(*row, out.log));
    std::optional<bool> existed;
    const auto& verdict = out.verdicts.back();
    if (verdict.kind == DoubtVerdict::Kind::applied && !row->value && resolution == ConflictResolution::postgres_wins)
      existed = co_await key_existed_before(row->key, verdict.revision);
    out.key_existed.push_back(existed);
  }
  log_info("outbox rows in doubt checked against etcd's receipts",
           {{"component", "outbox"}, {"rows", static_cast<std::int64_t>(rows.size())}, {"barrier_revision", barrier},
            {"from_revision", out.log.from_revision()}});
  co_return out;
}

}  // namespace etcd_sync
