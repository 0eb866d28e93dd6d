#include "reactor/mirror/watch_response.hpp"

namespace etcd_sync {

WatchStep read_watch_response(const etcdserverpb::WatchResponse& response, std::int64_t checkpoint) {
  const std::int64_t revision = response.header().revision();
  if (response.compact_revision() > 0) return {WatchStep::Kind::compacted, response.compact_revision(), {}};
  if (response.canceled()) return {WatchStep::Kind::cancelled, revision, response.cancel_reason()};
  if (response.events_size() > 0) return {WatchStep::Kind::events, revision, {}};
  if (response.created()) return {WatchStep::Kind::created, revision, {}};
  if (revision > checkpoint) return {WatchStep::Kind::progress, revision, {}};
  return {WatchStep::Kind::stale, revision, {}};
}

bool should_request_progress(std::chrono::steady_clock::duration quiet, std::chrono::milliseconds sync_interval,
                             bool writing) {
  return !writing && quiet >= sync_interval;
}

}  // namespace etcd_sync
