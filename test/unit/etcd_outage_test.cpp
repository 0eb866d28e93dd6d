// When the outbox's batches wait out an etcd outage, and who asks etcd whether it is over
// (reactor/outbox/etcd_outage.hpp, EtcdOutage).

#include "reactor/outbox/etcd_outage.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using clock = EtcdOutage::clock;

TEST(EtcdOutage, NoOutageNoWait) {
  EtcdOutage outage;
  const auto now = clock::now();
  EXPECT_FALSE(outage.waiting(now));
  EXPECT_TRUE(outage.begins(now));
}

TEST(EtcdOutage, ConcurrentFailuresOfOneOutageCountOnce) {
  EtcdOutage outage;
  const auto now = clock::now();
  ASSERT_TRUE(outage.begins(now));
  outage.began(now, 2s, 5);
  EXPECT_TRUE(outage.waiting(now + 1s));
  EXPECT_FALSE(outage.begins(now + 1s)) << "another batch's Txn failing in the same outage draws no new backoff";
  EXPECT_FALSE(outage.waiting(now + 2s));
  EXPECT_TRUE(outage.begins(now + 2s)) << "a failure after the backoff begins the next outage";
  EXPECT_EQ(outage.retry_at(), now + 2s);
}

TEST(EtcdOutage, OneWaiterAsksEveryProbeIntervalUntilTheBackoffEnds) {
  EtcdOutage outage;
  const auto now = clock::now();
  outage.began(now, 10s, 5);
  auto ask_at = outage.begin_probe(now);
  ASSERT_TRUE(ask_at);
  EXPECT_EQ(*ask_at, now + EtcdOutage::kProbeInterval);
  EXPECT_FALSE(outage.begin_probe(now)) << "another waiter is asking: wait for its answer or the backoff";
  EXPECT_FALSE(outage.probe_ended(*ask_at, std::nullopt)) << "no answer: the outage goes on";
  EXPECT_TRUE(outage.waiting(*ask_at));
  EXPECT_TRUE(outage.begin_probe(*ask_at)) << "the next waiter may ask";
  EXPECT_FALSE(outage.probe_ended(*ask_at, std::nullopt));

  const auto late = now + 10s - 100ms;
  ASSERT_TRUE(outage.begin_probe(late));
  EXPECT_FALSE(outage.begin_probe(late)) << "still probing";
  EXPECT_FALSE(outage.probe_ended(late, std::nullopt));
  EXPECT_EQ(*outage.begin_probe(late), now + 10s) << "never later than the backoff's end";
}

TEST(EtcdOutage, OnlyALeaderOfANewerRaftTermEndsTheOutage) {
  EtcdOutage outage;
  const auto now = clock::now();
  outage.began(now, 10s, 5);
  ASSERT_TRUE(outage.begin_probe(now));
  EXPECT_FALSE(outage.probe_ended(now + 250ms, LeaderSeen{7, 5}))
      << "followers name the dead leader until their election timeout";
  EXPECT_TRUE(outage.waiting(now + 250ms));
  ASSERT_TRUE(outage.begin_probe(now + 250ms));
  EXPECT_FALSE(outage.probe_ended(now + 500ms, LeaderSeen{0, 6})) << "an election in progress names no leader";
  ASSERT_TRUE(outage.begin_probe(now + 500ms));
  EXPECT_TRUE(outage.probe_ended(now + 750ms, LeaderSeen{8, 6}));
  EXPECT_FALSE(outage.waiting(now + 750ms)) << "every waiter goes on at once";
  EXPECT_EQ(outage.retry_at(), now + 750ms);
  EXPECT_TRUE(outage.begins(now + 750ms)) << "the next failure is a new outage";
}

TEST(EtcdOutage, NewlyElectedComparesWithTheTermTheOutageBeganIn) {
  EtcdOutage outage;
  outage.began(clock::now(), 1s, 41);
  EXPECT_TRUE(outage.newly_elected(LeaderSeen{1, 42}));
  EXPECT_FALSE(outage.newly_elected(LeaderSeen{1, 41}));
  EXPECT_FALSE(outage.newly_elected(LeaderSeen{0, 42}));
}

}  // namespace
}  // namespace etcd_sync
