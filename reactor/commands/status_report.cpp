#include "reactor/commands/status_report.hpp"

#include <algorithm>

namespace etcd_sync {

Liveness liveness(const std::optional<std::string>& state, std::optional<double> heartbeat_age_seconds) {
  Liveness out;
  out.state = state.value_or("never started");
  const bool claims_running = out.state == "running" || out.state == "starting";
  out.running = claims_running && heartbeat_age_seconds && *heartbeat_age_seconds < kHeartbeatStaleSeconds;
  if (claims_running && !out.running) out.state = "stopped (no heartbeat)";
  return out;
}

Lag mirror_lag(std::optional<std::int64_t> etcd_revision, std::optional<std::int64_t> mirrored_revision,
               std::optional<double> checkpoint_age_seconds) {
  Lag lag;
  if (!etcd_revision || !mirrored_revision) return lag;
  lag.revisions = std::max<std::int64_t>(0, *etcd_revision - *mirrored_revision);
  lag.seconds = *lag.revisions == 0 ? 0.0 : checkpoint_age_seconds.value_or(0.0);
  return lag;
}

}  // namespace etcd_sync
