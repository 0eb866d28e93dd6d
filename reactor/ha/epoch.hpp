#pragma once
// The epoch row a new term takes over before its engines write (README "Several instances: one
// leader"). etcd_sync_leader holds, per prefix, the epoch of the instance that leads; the fence
// (reactor/engine/fencing.hpp) refuses every write made under an older one.

#include "adapters/pg_connection.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/fencing.hpp"

namespace etcd_sync {

/// Records `term`'s epoch (an etcd revision) and `config`'s [ha] instance_id as the leader of
/// `term.prefix`, only if the epoch is greater than the one recorded, or the recorded one is above
/// `term.etcd_revision`: then etcd went back in time (restored from a snapshot), no key of this
/// etcd can have that create_revision, and its leader leads nowhere (logged at error). On a
/// connection of its own ("leader", `config`'s conninfo and request_timeout), closed before it
/// returns. The INSERT
/// first waits for the fence's share locks, held by transactions the previous leader still has
/// open (idle_in_transaction_session_timeout, [ha] ttl, ends them). Returns true when the epoch is
/// now the term's, false when PostgreSQL records one at least as new. Throws SyncError when
/// PostgreSQL fails or its request_timeout expires.
asio::awaitable<bool> take_over_epoch(asio::io_context& io, const Config& config, const LeaderTerm& term);

}  // namespace etcd_sync
