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

/// Whether a Watch stream's member still answers. A quiet stream looks the same whether nothing
/// changed under the prefix or the member froze with its connection open (SIGSTOP, a hung host), so
/// after kQuiet without any response the member is asked for its Status; kStrikes asks in a row
/// left unanswered within kProbeTimeout each, or answered without a raft leader, end the watch and
/// the mirror watches on another member. Any response resets the count. (A progress request is no
/// probe: etcd 3.4 answers it apart from the events, so asking while events are on the way could
/// move the checkpoint past them; see should_request_progress.)
class WatchLiveness {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kQuiet{1000};
  static constexpr std::chrono::milliseconds kProbeTimeout{750};
  static constexpr int kStrikes = 2;

  explicit WatchLiveness(clock::time_point now) : heard_(now) {}
  /// A response arrived at `now`.
  void heard(clock::time_point now) {
    heard_ = now;
    strikes_ = 0;
  }
  /// Whether to ask the member now: quiet for kQuiet since the last response.
  bool probe_due(clock::time_point now) const { return now - heard_ >= kQuiet; }
  /// Records an ask's result; true when the watch must end (kStrikes failed asks in a row).
  bool probed(bool answered) {
    strikes_ = answered ? 0 : strikes_ + 1;
    return strikes_ >= kStrikes;
  }
  /// How long the stream has been quiet at `now`.
  std::chrono::milliseconds quiet_for(clock::time_point now) const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - heard_);
  }

 private:
  clock::time_point heard_;
  int strikes_ = 0;
};

}  // namespace etcd_sync
