#pragma once
// The outbox's etcd-outage gate. When a Txn or a barrier finds etcd unreachable, every batch waits
// until the outage's backoff has passed, or until etcd answers with a newly elected leader,
// whichever is first. One waiter at a time asks etcd (Maintenance.Status, every kProbeInterval);
// the others wait for its answer or the backoff's end.
//
// EtcdOutage decides (pure: times and answers in, decisions out; unit-tested without servers);
// EtcdOutageGate waits and asks.

#include "adapters/errors.hpp"
#include "adapters/etcd_client.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/loop/wakeup.hpp"
#include "reactor/outbox/outbox_state.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace etcd_sync {

/// What etcd's Status answer names: its leader member (0: none) and its raft term.
struct LeaderSeen {
  std::uint64_t leader = 0;
  std::uint64_t raft_term = 0;
};

/// One etcd outage as the outbox sees it: until when calls wait, and who asks whether it is over.
class EtcdOutage {
 public:
  using clock = std::chrono::steady_clock;

  /// How often a waiter asks etcd for its Status during an outage: etcd elects a new leader in
  /// about a second (its default election timeout is 1000 ms), and the outbox should follow
  /// within 2 s.
  static constexpr std::chrono::milliseconds kProbeInterval{250};

  /// Whether a call to etcd that failed at `now` begins a new outage (the caller draws its backoff
  /// and calls began()). Concurrent failures of one outage count once: a new backoff starts only
  /// after the last one has passed.
  bool begins(clock::time_point now) const { return now >= retry_at_; }
  /// An outage began at `now`: calls wait `backoff`, or until etcd names a leader of a raft term
  /// newer than `raft_term` (etcd's term as the client last saw it).
  void began(clock::time_point now, std::chrono::milliseconds backoff, std::int64_t raft_term) {
    retry_at_ = now + backoff;
    term_ = raft_term;
  }
  /// Whether calls must still wait at `now`.
  bool waiting(clock::time_point now) const { return now < retry_at_; }
  /// When the outage's backoff ends (earlier once a new leader was seen).
  clock::time_point retry_at() const { return retry_at_; }

  /// A waiter at `now` offers to ask etcd. Returns when to ask (kProbeInterval on, or the
  /// backoff's end if sooner): it is the prober until probe_ended(). nullopt: another waiter is
  /// asking; wait until retry_at() or its answer.
  std::optional<clock::time_point> begin_probe(clock::time_point now) {
    if (probing_) return std::nullopt;
    probing_ = true;
    return std::min(retry_at_, now + kProbeInterval);
  }
  /// The prober is done at `now`; `answer` is etcd's Status (nullopt: no answer, or not asked).
  /// Returns true when the outage is over: etcd names a leader of a newer raft term than the
  /// outage began in (right after a leader dies its followers still name it until their election
  /// timeout, and a Txn sent then waits out etcd's request timeout). Then retry_at() is `now`.
  /// An outage that ends without an election waits out its backoff.
  bool probe_ended(clock::time_point now, const std::optional<LeaderSeen>& answer) {
    probing_ = false;
    if (!answer || !newly_elected(*answer)) return false;
    retry_at_ = now;
    return true;
  }
  /// Whether `answer` names a leader of a newer raft term than the outage began in.
  bool newly_elected(const LeaderSeen& answer) const {
    return answer.leader != 0 && static_cast<std::int64_t>(answer.raft_term) > term_;
  }

 private:
  clock::time_point retry_at_{};
  std::int64_t term_ = 0;  ///< etcd's raft term when the outage began
  bool probing_ = false;   ///< a waiter is asking etcd for its Status
};

/// Waits out etcd outages for the outbox's batches, and reports them in the outbox's status.
class EtcdOutageGate {
 public:
  /// `status` is the outbox's: an outage is logged and backed off there.
  EtcdOutageGate(asio::io_context& io, EtcdClient& etcd, EngineStatus<OutboxState>& status);

  /// A call to etcd failed with `error` (an outage; an error of no peer is named etcd's). The
  /// first failure of an outage draws its backoff within `retry` (EngineStatus::failed: logged,
  /// etcd marked failing) and notes etcd's raft term; concurrent failures of it count once.
  void failed(const SyncError& error, const RetryConfig& retry);
  /// A call to etcd worked: when etcd was the failing peer, the outage ends (logged once) and the
  /// outbox is applying again.
  void working();
  /// Waits until the outage's backoff has passed, or until etcd answers with a newly elected
  /// leader, whichever is first; at once when there is no outage. Returns false when stopping.
  /// Never throws (an unanswered Status call leaves the backoff running).
  asio::awaitable<bool> ready();
  /// Every waiter looks again now (the outbox was fenced).
  void wake() { waiters_.notify_all(); }
  /// Every wait ends, and ready() returns false from now on.
  void stop() {
    stopping_ = true;
    waiters_.notify_all();
  }

 private:
  /// One Maintenance.Status call: what it names, or nullopt when etcd does not answer.
  asio::awaitable<std::optional<LeaderSeen>> ask_etcd();

  EtcdClient& etcd_;
  EngineStatus<OutboxState>& status_;
  Broadcast waiters_;  ///< ready() calls waiting out an outage: stop, fenced, etcd is back
  EtcdOutage outage_;
  bool stopping_ = false;
};

}  // namespace etcd_sync
