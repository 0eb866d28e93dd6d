// When the outbox claims, how many rows and from which id (reactor/outbox/claim_schedule.hpp).

#include "reactor/outbox/claim_schedule.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using clock = ClaimSchedule::clock;

TEST(ClaimSchedule, ClaimLimitKeepsWithinBatchesInFlightAndApplying) {
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 0, 0, false), 100);
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 350, 1, true), 50) << "4 batches of claimed, unwritten rows at most";
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 400, 0, true), 0);
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 0, ClaimSchedule::kBatchesApplying, true), 0)
      << "kBatchesApplying batches in etcd at most";
  EXPECT_EQ(ClaimSchedule::claim_limit(1, 3, 1, true), 1);
}

TEST(ClaimSchedule, AfterAShortClaimTheNextWaitsForTheBatchInEtcd) {
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 3, 1, false), 0)
      << "the rows arriving meanwhile wait to share one claim and one Txn";
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 3, 0, false), 100) << "nothing in etcd: claim at once";
  EXPECT_EQ(ClaimSchedule::claim_limit(100, 100, 1, true), 100) << "a full claim may have left rows: overlap";
}

TEST(ClaimSchedule, StatisticsAreStaleWhenThePlannerBelievesFewRowsPending) {
  EXPECT_TRUE(ClaimSchedule::statistics_stale(1, 10000)) << "analyzed while nothing was pending";
  EXPECT_TRUE(ClaimSchedule::statistics_stale(499, 2000));
  EXPECT_FALSE(ClaimSchedule::statistics_stale(500, 2000)) << "a quarter of the rows is close enough";
  EXPECT_FALSE(ClaimSchedule::statistics_stale(1, 1999)) << "a small backlog costs little whatever the plan";
  EXPECT_FALSE(ClaimSchedule::statistics_stale(200000, 10000)) << "the count stops at kPendingSample";
}

TEST(ClaimSchedule, TheFloorFollowsTheLowestPendingIdAndNotifiedIdsLowerIt) {
  ClaimSchedule schedule;
  const auto now = clock::now();
  EXPECT_EQ(schedule.begin_claim(now, 5s), 0) << "the first claim scans from 0";
  EXPECT_TRUE(schedule.end_claim(100, 100, 500)) << "a full claim may have left rows behind";
  EXPECT_EQ(schedule.floor(), 500);
  EXPECT_EQ(schedule.begin_claim(now + 1s, 5s), 500);
  schedule.notified(420);  // committed late, below the floor
  EXPECT_FALSE(schedule.end_claim(3, 100, 600)) << "a short claim took every due row";
  EXPECT_EQ(schedule.floor(), 420) << "a NOTIFY during the claim keeps its id in reach";
  schedule.notified(std::nullopt);
  EXPECT_EQ(schedule.floor(), 0) << "a NOTIFY naming no id (or a reconnect): anywhere";
}

TEST(ClaimSchedule, OneClaimEverySyncIntervalScansFromZero) {
  ClaimSchedule schedule;
  const auto start = clock::now();
  schedule.begin_claim(start, 5s);
  schedule.end_claim(1, 100, 900);
  EXPECT_EQ(schedule.begin_claim(start + 4s, 5s), 900);
  schedule.end_claim(1, 100, 900);
  EXPECT_EQ(schedule.begin_claim(start + 5s, 5s), 0);
  schedule.end_claim(0, 100, std::nullopt);
  EXPECT_GT(schedule.floor(), 1'000'000) << "nothing pending: the floor rises until a NOTIFY lowers it";
  schedule.reconnected();
  EXPECT_EQ(schedule.floor(), 0);
}

TEST(ClaimSchedule, SleepsNoLongerThanTheEarliestRetry) {
  ClaimSchedule schedule;
  const auto now = clock::now();
  EXPECT_EQ(schedule.sleep_limit(now, 5s), 5s);
  schedule.retry_at(now + 300ms);
  schedule.retry_at(now + 2s);
  EXPECT_EQ(schedule.sleep_limit(now, 5s), 300ms);
  EXPECT_EQ(schedule.sleep_limit(now + 1s, 5s), 1ms) << "overdue: wake at once";
  EXPECT_EQ(schedule.idle_wait(now, 5s, 120), 120ms) << "a backed-off row in the table falls due sooner";
  EXPECT_EQ(schedule.idle_wait(now, 5s, std::nullopt), 300ms);
  schedule.begin_claim(now + 400ms, 5s);  // that claim takes the retry
  EXPECT_EQ(schedule.sleep_limit(now + 400ms, 5s), 5s);
}

}  // namespace
}  // namespace etcd_sync
