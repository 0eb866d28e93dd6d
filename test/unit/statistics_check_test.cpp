// When the outbox checks PostgreSQL's statistics of etcd_wal and what the readings call for
// (reactor/outbox/statistics_check.hpp, StatisticsCheck).

#include "reactor/outbox/statistics_check.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using clock = StatisticsCheck::clock;
using Verdict = StatisticsCheck::Verdict;

TEST(StatisticsCheck, OnlyWhileClaimsAreBackedUp) {
  StatisticsCheck check;
  const auto now = clock::now();
  EXPECT_FALSE(check.due(now, false)) << "a short claim took every due row: the plan costs little";
  EXPECT_TRUE(check.due(now, true));
}

TEST(StatisticsCheck, EveryCheckIntervalAndAfterAnAnalyzeEveryAnalyzeInterval) {
  StatisticsCheck check;
  const auto now = clock::now();
  check.began(now);
  EXPECT_FALSE(check.due(now + 1s, true));
  EXPECT_TRUE(check.due(now + ClaimSchedule::kStatisticsCheckInterval, true));

  check.began(now + 10s);
  EXPECT_EQ(check.judge(1, 10000, true), Verdict::analyze);
  check.analyzed(now + 11s);
  EXPECT_FALSE(check.due(now + 11s + ClaimSchedule::kStatisticsCheckInterval, true));
  EXPECT_TRUE(check.due(now + 11s + ClaimSchedule::kAnalyzeInterval, true));
}

TEST(StatisticsCheck, AnalyzeOnlyWhenTheEstimateIsStale) {
  StatisticsCheck check;
  EXPECT_EQ(check.judge(std::nullopt, 10000, true), Verdict::current) << "a plan naming no estimate decides nothing";
  EXPECT_EQ(check.judge(5000, 10000, true), Verdict::current) << "a quarter of the rows is close enough";
  EXPECT_EQ(check.judge(1, 1999, true), Verdict::current) << "a small backlog costs little whatever the plan";
  EXPECT_EQ(check.judge(1, 2000, true), Verdict::analyze);
  EXPECT_FALSE(check.refused());
}

TEST(StatisticsCheck, ARoleThatMayNotAnalyzeIsToldOnceAndNeverChecksAgain) {
  StatisticsCheck check;
  const auto now = clock::now();
  EXPECT_EQ(check.judge(5000, 10000, false), Verdict::current) << "fresh statistics need no permission";
  EXPECT_FALSE(check.refused());
  check.began(now);
  EXPECT_EQ(check.judge(1, 10000, false), Verdict::refused);
  EXPECT_TRUE(check.refused());
  EXPECT_FALSE(check.due(now + 1h, true)) << "a check could only say so again";
}

}  // namespace
}  // namespace etcd_sync
