#include "reactor/engine/engine_status.hpp"

#include "reactor/loop/logging.hpp"

namespace etcd_sync {

const char* to_string(Peer peer) {
  switch (peer) {
    case Peer::etcd: return "etcd";
    case Peer::postgresql: return "postgresql";
    case Peer::unknown: return "";
  }
  return "";
}

PeerHealth* PeerMark::health(Peer peer) {
  switch (peer) {
    case Peer::etcd: return &stats_.etcd;
    case Peer::postgresql: return &stats_.postgresql;
    case Peer::unknown: return nullptr;
  }
  return nullptr;
}

void PeerMark::failing(const SyncError& error) { move_to(error.peer(), &error, false); }

void PeerMark::working(Peer peer) {
  if (auto* h = health(peer)) {
    h->seen = true;
    h->last_worked = std::chrono::steady_clock::now();
  }
  if (peer == peer_) move_to(Peer::unknown, nullptr, true);
}

void PeerMark::move_to(Peer peer, const SyncError* error, bool recovered) {
  if (peer == peer_) return;
  if (auto* old = health(peer_); old && --old->failing == 0) {
    if (recovered)
      log_info("peer reachable again",
               {{"peer", to_string(peer_)}, {"endpoint", old->endpoint},
                {"unreachable_ms", old->failing_for(std::chrono::steady_clock::now()).count()}});
    old->failing_since.reset();
    old->failing_since_unix_ms = 0;
  }
  peer_ = peer;
  auto* now = health(peer_);
  if (!now || now->failing++ > 0) return;
  now->failing_since = std::chrono::steady_clock::now();
  now->failing_since_unix_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  now->endpoint = error ? error->endpoint() : std::string();
  now->unreachable = error && error->transient();
  LogFields fields{{"peer", to_string(peer_)}};
  if (!now->endpoint.empty()) fields.push_back({"endpoint", now->endpoint});
  if (error) fields.push_back({"error", error->what()});
  log_warn(error && error->transient() ? "peer unreachable" : "peer failing", fields);
}

}  // namespace etcd_sync
