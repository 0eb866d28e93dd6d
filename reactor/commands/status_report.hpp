#pragma once
// What `etcd-sync status` concludes from what it read: whether the service runs, and how far the
// mirror lags behind etcd. Pure: unit-tested without servers.

#include <cstdint>
#include <optional>
#include <string>

namespace etcd_sync {

/// A heartbeat older than this means the service is not running, whatever its row says.
inline constexpr double kHeartbeatStaleSeconds = 10.0;

/// Whether the service runs, from its row's `state` ("starting", "running", "stopped"; nullopt
/// when it never started) and the heartbeat's age in seconds (nullopt: none).
struct Liveness {
  bool running = false;
  std::string state;  ///< as shown: the row's state, "never started", or "stopped (no heartbeat)"
};
Liveness liveness(const std::optional<std::string>& state, std::optional<double> heartbeat_age_seconds);

/// The mirror's lag behind etcd: revisions (never negative) and seconds (the checkpoint's age, 0
/// when caught up). nullopt parts when etcd or the checkpoint is unknown.
struct Lag {
  std::optional<std::int64_t> revisions;
  std::optional<double> seconds;
};
Lag mirror_lag(std::optional<std::int64_t> etcd_revision, std::optional<std::int64_t> mirrored_revision,
               std::optional<double> checkpoint_age_seconds);

}  // namespace etcd_sync
