#pragma once
// Whether this instance can do a leader's work, from how its engines find the two peers. Pure:
// unit-tested. A leader that cannot reach PostgreSQL or etcd for longer than [ha] ttl resigns, so
// an instance that reaches both takes over within ttl + 2 s; a standby that cannot reach
// PostgreSQL does not take the lead (README, "High availability").

#include "reactor/engine/sync_stats.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace etcd_sync {

/// Why a leader must resign at `now`: an engine is failing on PostgreSQL or etcd with an outage
/// (a transient error: unreachable, past its deadline), and no engine has done work with that peer
/// for `ttl` or longer (counted from the last work done, or from the failure when none was: the
/// outage began then, a request deadline before it was noticed). nullopt while it can work. A
/// peer that refuses a statement (a permanent error) is no reason: another instance would meet
/// the same refusal.
inline std::optional<std::string> resign_reason(const PeerHealth& postgresql, const PeerHealth& etcd,
                                                std::chrono::milliseconds ttl,
                                                std::chrono::steady_clock::time_point now) {
  for (const auto& [name, peer] : {std::pair<const char*, const PeerHealth*>{"PostgreSQL", &postgresql},
                                   std::pair<const char*, const PeerHealth*>{"etcd", &etcd}}) {
    if (peer->failing == 0 || !peer->unreachable) continue;
    const auto since = peer->last_worked.value_or(peer->failing_since.value_or(now));
    const auto down = std::chrono::duration_cast<std::chrono::milliseconds>(now - since);
    if (down >= ttl) {
      std::string why = std::string("cannot reach ") + name;
      if (!peer->endpoint.empty()) why += " at " + peer->endpoint;
      return why + " for " + std::to_string(down.count()) + " ms, longer than [ha] ttl (" +
             std::to_string(ttl.count()) + " ms)";
    }
  }
  return std::nullopt;
}

/// Why an instance must not take the lead now: an engine is failing on PostgreSQL with an outage
/// (it could not record its epoch, and would only resign again). nullopt when it may lead.
inline std::optional<std::string> lead_refusal(const PeerHealth& postgresql) {
  if (postgresql.failing == 0 || !postgresql.unreachable) return std::nullopt;
  std::string why = "PostgreSQL is unreachable";
  if (!postgresql.endpoint.empty()) why += " at " + postgresql.endpoint;
  return why;
}

}  // namespace etcd_sync
