#pragma once
// What each WatchResponse means to the mirror, and when a quiet watch asks etcd for progress.
// Pure: unit-tested without servers.

#include "etcd/rpc.pb.h"

#include <chrono>
#include <cstdint>
#include <string>

namespace etcd_sync {

/// The mirror's reading of one WatchResponse.
struct WatchStep {
  enum class Kind {
    created,    ///< the watch is established (may carry no events)
    events,     ///< events to write; `revision` is the header's
    progress,   ///< no event under the prefix up to `revision`: the checkpoint may move there
    stale,      ///< a progress notification at or below the checkpoint: nothing to do
    compacted,  ///< etcd compacted `revision` (compact_revision) before the watch's start: resync
    cancelled,  ///< etcd cancelled the watch for `reason`: start a new one
  };
  Kind kind = Kind::stale;
  std::int64_t revision = 0;
  std::string reason;
};

/// Reads `response` for a mirror whose checkpoint is `checkpoint`. A response with
/// compact_revision > 0 is compacted (etcd sets it when the start revision is compacted, also with
/// canceled = true; mvcc/watchable_store.go), checked before canceled; a response with events is
/// `events`; an empty one is `created` when it says so, else progress above the checkpoint (etcd
/// sends those for progress_notify and for progress requests; api/v3rpc/watch.go) or `stale`.
WatchStep read_watch_response(const etcdserverpb::WatchResponse& response, std::int64_t checkpoint);

/// Whether a watch that has been quiet (no event) for `quiet` asks etcd for progress now: only
/// after a whole `sync_interval` without events, and only when no other write is in flight on the
/// stream (gRPC allows one at a time). etcd 3.4 answers a progress request with the store's current
/// revision for every watcher of the stream, caught up or not, on a channel apart from the events
/// (etcdserver/api/v3rpc/watch.go, WatchRequest_ProgressRequest), so a busy watch never asks: the
/// answer could overtake events not yet delivered.
bool should_request_progress(std::chrono::steady_clock::duration quiet, std::chrono::milliseconds sync_interval,
                             bool writing);

}  // namespace etcd_sync
