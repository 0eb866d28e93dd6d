#pragma once
// Failpoints for the fault tests: named places in the engines where a test can make the process
// die (SIGKILL, as kill -9 would) or freeze (SIGSTOP, as a paused VM would) at exactly that
// moment. Set by the environment variable ETCD_SYNC_FAILPOINTS, read once:
//
//   ETCD_SYNC_FAILPOINTS="outbox.after_txn=kill@3,mirror.before_commit=stop"
//
// `name=action[@n]`: the action runs on the n-th time (default the first) the place is reached,
// once. Actions: kill, stop. Unset (as in production), a failpoint costs one branch.

#include <string_view>

namespace etcd_sync {

/// Runs the action configured for `name`, if any and if this is its hit.
void failpoint(std::string_view name);

}  // namespace etcd_sync
