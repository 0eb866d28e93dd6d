#pragma once
// The outbox's states (outbox.hpp), apart so that the parts it is built of can report into its
// EngineStatus.

namespace etcd_sync {

/// Where the outbox is; each change is logged once.
enum class OutboxState {
  starting,     ///< not yet connected
  idle,         ///< no due rows: waiting for NOTIFY, the sweep, or a retry to fall due
  applying,     ///< rows are on their way to etcd
  backing_off,  ///< etcd or PostgreSQL unreachable (the peer is named): waiting before trying again
  stopped,      ///< run() has returned
};
/// The state's name in logs and status ("backing_off"); defined in outbox.cpp.
const char* to_string(OutboxState state);

}  // namespace etcd_sync
