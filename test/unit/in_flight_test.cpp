// The outbox's claimed rows until their outcomes are written: room for the next claim, suspect
// ids, whether written outcomes wake the claim loop (reactor/outbox/in_flight.hpp, InFlight).

#include "reactor/outbox/in_flight.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace etcd_sync {
namespace {

Attempt attempt(std::int64_t id) {
  Attempt a;
  a.row.id = id;
  a.row.key = "/k" + std::to_string(id);
  a.row.claim_revision = 100;
  return a;
}

std::vector<Attempt> batch(std::initializer_list<std::int64_t> ids) {
  std::vector<Attempt> out;
  for (auto id : ids) out.push_back(attempt(id));
  return out;
}

DecidedRow decided(std::int64_t id, std::optional<std::int64_t> attempt_revision = std::nullopt) {
  DecidedRow d;
  d.row = attempt(id).row;
  d.row.attempt_revision = attempt_revision;
  return d;
}

OutcomesWritten written_rows(std::vector<DecidedRow> rows, std::unordered_set<std::int64_t> updated,
                             bool more_pending = false) {
  OutcomesWritten w;
  w.rows = std::move(rows);
  w.updated = std::move(updated);
  w.more_pending = more_pending;
  return w;
}

TEST(InFlight, ClaimedRowsStayUnsettledUntilTheirOutcomesAreWritten) {
  InFlight in_flight;
  EXPECT_TRUE(in_flight.settled());
  auto rows = batch({1, 2, 3});
  in_flight.batch_started(rows);
  EXPECT_EQ(in_flight.unsettled().size(), 3u);
  EXPECT_EQ(in_flight.batches_applying(), 1);

  rows[0].outcome = WalOutcome{};
  rows[1].outcome = WalOutcome{};
  in_flight.batch_decided(rows);
  EXPECT_EQ(in_flight.unsettled().size(), 2u) << "a row left without an outcome (stopping) stays pending, claimable";
  EXPECT_FALSE(in_flight.unsettled().count(3));
  in_flight.batch_ended();
  EXPECT_EQ(in_flight.batches_applying(), 0);

  EXPECT_TRUE(in_flight.written(written_rows({decided(1), decided(2)}, {1, 2})).empty());
  EXPECT_TRUE(in_flight.settled());
}

TEST(InFlight, ClaimLimitCountsUnsettledRowsAndBatchesInEtcd) {
  InFlight in_flight;
  EXPECT_EQ(in_flight.claim_limit(2, false), 2);
  in_flight.batch_started(batch({1, 2}));
  EXPECT_EQ(in_flight.claim_limit(2, false), 0) << "a short claim waits for the batch in etcd";
  EXPECT_EQ(in_flight.claim_limit(2, true), 2) << "a full one may overlap";
  in_flight.batch_started(batch({3, 4}));
  EXPECT_EQ(in_flight.claim_limit(2, true), 0) << "ClaimSchedule::kBatchesApplying batches in etcd at most";
  in_flight.batch_ended();
  in_flight.batch_ended();
  in_flight.batch_started(batch({5, 6}));
  in_flight.batch_started(batch({7, 8}));
  in_flight.batch_ended();
  in_flight.batch_ended();
  EXPECT_EQ(in_flight.claim_limit(2, true), 0) << "4 batches of claimed, unwritten rows at most";
}

TEST(InFlight, ADroppedOutcomeMakesItsIdSuspectUntilDecidedInDoubt) {
  InFlight in_flight;
  in_flight.batch_started(batch({1, 2, 3}));
  auto dropped = in_flight.written(written_rows({decided(1), decided(2, 40), decided(3)}, {1}));
  ASSERT_EQ(dropped.size(), 2u);
  EXPECT_EQ(dropped[0]->row.id, 2);
  EXPECT_EQ(dropped[1]->row.id, 3);
  EXPECT_TRUE(in_flight.settled()) << "a dropped outcome settles its row too";
  EXPECT_FALSE(in_flight.suspect(1));

  WalRow fresh = attempt(3).row;  // the id came back (a PostgreSQL failover handed it out again)
  in_flight.doubt_if_suspect(fresh);
  EXPECT_EQ(fresh.attempt_revision, 100) << "in doubt from the dropped attempt's claim_revision";

  WalRow earlier = attempt(2).row;
  earlier.attempt_revision = 60;
  in_flight.doubt_if_suspect(earlier);
  EXPECT_EQ(earlier.attempt_revision, 40) << "the lower of the two attempt revisions";
  WalRow older = attempt(2).row;
  older.attempt_revision = 30;
  in_flight.doubt_if_suspect(older);
  EXPECT_EQ(older.attempt_revision, 30);

  WalRow other = attempt(1).row;
  in_flight.doubt_if_suspect(other);
  EXPECT_FALSE(other.attempt_revision) << "an id whose outcome was written is not suspect";

  in_flight.doubt_decided(3);
  EXPECT_FALSE(in_flight.suspect(3));
  WalRow again = attempt(3).row;
  in_flight.doubt_if_suspect(again);
  EXPECT_FALSE(again.attempt_revision) << "decided from its receipt: no longer suspect";
}

TEST(InFlight, AnAbandonedWriteDropsNothing) {
  InFlight in_flight;
  in_flight.batch_started(batch({1}));
  in_flight.batch_ended();
  auto w = written_rows({decided(1)}, {});
  w.abandoned = true;
  EXPECT_TRUE(in_flight.written(w).empty()) << "stopping: the row stays pending, its outcome was not dropped";
  EXPECT_FALSE(in_flight.suspect(1));
  EXPECT_EQ(in_flight.after_written(w), InFlight::AfterWritten::wake);
}

TEST(InFlight, WrittenOutcomesWakeTheClaimLoopWhenRowsMayBeClaimed) {
  InFlight in_flight;
  in_flight.batch_started(batch({1, 2}));
  in_flight.batch_ended();
  auto first = written_rows({decided(1)}, {1});
  in_flight.written(first);
  EXPECT_EQ(in_flight.after_written(first), InFlight::AfterWritten::nothing) << "row 2's outcome will come";
  auto more = written_rows({decided(1)}, {1}, true);
  EXPECT_EQ(in_flight.after_written(more), InFlight::AfterWritten::wake) << "the next row of a key is pending";
  in_flight.waiting_for_room(true);
  EXPECT_EQ(in_flight.after_written(first), InFlight::AfterWritten::wake) << "outcomes freed room";
  in_flight.waiting_for_room(false);
  auto last = written_rows({decided(2)}, {2});
  in_flight.written(last);
  EXPECT_EQ(in_flight.after_written(last), InFlight::AfterWritten::idle);
  in_flight.batch_started(batch({3}));
  EXPECT_EQ(in_flight.after_written(last), InFlight::AfterWritten::wake) << "a batch in etcd: its end will need a claim";
}

}  // namespace
}  // namespace etcd_sync
