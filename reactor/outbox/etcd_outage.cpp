#include "reactor/outbox/etcd_outage.hpp"

#include "reactor/loop/logging.hpp"

namespace etcd_sync {

namespace {
// Outside the coroutines: g++ 12 mishandles class temporaries there.
LeaderSeen leader_seen(const etcdserverpb::StatusResponse& response) {
  return LeaderSeen{response.leader(), response.raftterm()};
}
SyncError named_etcd(const SyncError& error) {
  return error.peer() == Peer::unknown ? SyncError(error.kind(), error.what(), Peer::etcd) : error;
}
}  // namespace

EtcdOutageGate::EtcdOutageGate(asio::io_context& io, EtcdClient& etcd, EngineStatus<OutboxState>& status)
    : etcd_(etcd), status_(status), waiters_(io) {}

void EtcdOutageGate::failed(const SyncError& error, const RetryConfig& retry) {
  const auto now = std::chrono::steady_clock::now();
  if (!outage_.begins(now)) return;
  const auto backoff = status_.failed(named_etcd(error), retry);
  outage_.began(now, backoff, etcd_.raft_term());
}

void EtcdOutageGate::working() {
  if (status_.failing_peer() != Peer::etcd) return;
  status_.working(Peer::etcd);
  log_info("outbox reaches etcd again", {{"component", "outbox"}});
  status_.set(OutboxState::applying);
}

asio::awaitable<bool> EtcdOutageGate::ready() {
  while (!stopping_ && outage_.waiting(std::chrono::steady_clock::now())) {
    const auto ask_at = outage_.begin_probe(std::chrono::steady_clock::now());
    if (!ask_at) {
      co_await waiters_.wait_until(outage_.retry_at());
      continue;
    }
    co_await waiters_.wait_until(*ask_at);
    std::optional<LeaderSeen> answer;
    if (!stopping_ && outage_.waiting(std::chrono::steady_clock::now())) answer = co_await ask_etcd();
    if (outage_.probe_ended(std::chrono::steady_clock::now(), answer)) waiters_.notify_all();
  }
  co_return !stopping_;
}

asio::awaitable<std::optional<LeaderSeen>> EtcdOutageGate::ask_etcd() {
  std::optional<LeaderSeen> answer;
  try {
    const auto response = co_await etcd_.status();
    answer = leader_seen(response);
  } catch (const SyncError&) {
    // still down: the backoff goes on, and the client has moved to its next endpoint
  }
  co_return answer;
}

}  // namespace etcd_sync
