// The engines' shared status helper (reactor/engine/engine_status.hpp).

#include "reactor/engine/engine_status.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

enum class S { idle, busy, backing_off };
const char* to_string(S s) {
  switch (s) {
    case S::idle: return "idle";
    case S::busy: return "busy";
    case S::backing_off: return "backing_off";
  }
  return "?";
}

TEST(EngineStatus, AFailureNamesItsPeerMarksItDownAndBacksOffWithinTheLimits) {
  SyncStats stats;
  EngineStatus<S> status("engine", S::idle, S::backing_off, stats);
  RetryConfig retry{3, std::chrono::milliseconds(100), std::chrono::milliseconds(400)};
  status.working(Peer::etcd);
  EXPECT_TRUE(stats.etcd.up());
  auto delay = status.failed(SyncError(ErrorKind::transient, "unreachable", Peer::etcd), retry);
  EXPECT_GE(delay, std::chrono::milliseconds(50));
  EXPECT_LE(delay, std::chrono::milliseconds(100));
  EXPECT_EQ(status.state(), S::backing_off);
  EXPECT_EQ(status.describe(), "backing_off (etcd)");
  EXPECT_FALSE(stats.etcd.up());
  EXPECT_EQ(stats.last_error, "unreachable");
  for (int i = 0; i < 5; ++i) EXPECT_LE(status.failed(SyncError(ErrorKind::transient, "again", Peer::etcd), retry),
                                        std::chrono::milliseconds(400));
  status.working(Peer::etcd);
  EXPECT_TRUE(stats.etcd.up());
  EXPECT_EQ(status.attempts(), 0) << "the backoff starts over";
}

TEST(EngineStatus, PeerHealthCountsEveryEngineFailingOnIt) {
  SyncStats stats;
  RetryConfig retry;
  {
    EngineStatus<S> a("a", S::idle, S::backing_off, stats), b("b", S::idle, S::backing_off, stats);
    a.working(Peer::postgresql);
    a.failed(SyncError(ErrorKind::transient, "x", Peer::postgresql), retry);
    b.failed(SyncError(ErrorKind::transient, "y", Peer::postgresql), retry);
    EXPECT_EQ(stats.postgresql.failing, 2);
    a.working(Peer::postgresql);
    EXPECT_FALSE(stats.postgresql.up()) << "b still fails on it";
    b.failed(SyncError(ErrorKind::transient, "z", Peer::etcd), retry);  // b's outage moves to etcd
    EXPECT_TRUE(stats.postgresql.up());
    EXPECT_EQ(stats.etcd.failing, 1);
  }
  EXPECT_EQ(stats.etcd.failing, 0) << "an engine that is gone fails on nothing";
}

}  // namespace
}  // namespace etcd_sync
