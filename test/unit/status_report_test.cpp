// What `etcd-sync status` concludes (reactor/commands/status_report.hpp).

#include "reactor/commands/status_report.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

TEST(Liveness, RunningNeedsAFreshHeartbeat) {
  EXPECT_TRUE(liveness("running", 0.5).running);
  EXPECT_TRUE(liveness("starting", 9.0).running);
  auto stale = liveness("running", 10.5);
  EXPECT_FALSE(stale.running);
  EXPECT_EQ(stale.state, "stopped (no heartbeat)");
  EXPECT_EQ(liveness("running", std::nullopt).state, "stopped (no heartbeat)");
  auto stopped = liveness("stopped", 0.1);
  EXPECT_FALSE(stopped.running);
  EXPECT_EQ(stopped.state, "stopped");
  EXPECT_EQ(liveness(std::nullopt, std::nullopt).state, "never started");
}

TEST(MirrorLag, RevisionsBehindAndTheCheckpointsAge) {
  auto lag = mirror_lag(120, 100, 3.5);
  EXPECT_EQ(lag.revisions, 20);
  EXPECT_EQ(lag.seconds, 3.5);
  lag = mirror_lag(100, 100, 42.0);
  EXPECT_EQ(lag.revisions, 0);
  EXPECT_EQ(lag.seconds, 0.0) << "caught up: a quiet checkpoint's age is not lag";
  EXPECT_EQ(mirror_lag(90, 100, 1.0).revisions, 0) << "never negative (etcd read before the checkpoint moved)";
  EXPECT_FALSE(mirror_lag(std::nullopt, 100, 1.0).revisions.has_value()) << "etcd unreachable";
  EXPECT_FALSE(mirror_lag(100, std::nullopt, std::nullopt).seconds.has_value()) << "no checkpoint yet";
}

}  // namespace
}  // namespace etcd_sync
