#include "reactor/engine/engine_status.hpp"

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

void PeerMark::failing(Peer peer) {
  if (peer == peer_) return;
  if (auto* old = health(peer_)) --old->failing;
  peer_ = peer;
  if (auto* now = health(peer_)) ++now->failing;
}

void PeerMark::working(Peer peer) {
  if (auto* h = health(peer)) h->seen = true;
  if (peer == peer_) failing(Peer::unknown);
}

}  // namespace etcd_sync
