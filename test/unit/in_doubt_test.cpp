// Rows in doubt (reactor/outbox/in_doubt.hpp): decided from the receipts etcd's history holds up to
// a barrier, never from the keys' current values.

#include "reactor/outbox/in_doubt.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

WalRow doubtful(std::int64_t id, const std::string& key, std::optional<std::string> value, std::int64_t since) {
  WalRow row;
  row.id = id;
  row.key = key;
  row.value = std::move(value);
  row.revision = 3;
  row.attempt_revision = since;
  return row;
}

TEST(DecideInDoubt, AReceiptNamingTheRowMeansItWasAppliedAtThatRevision) {
  auto row = doubtful(12, "/k", "v", 100);
  auto other = doubtful(13, "/j", "w", 100);
  ReceiptLog log(101);
  log.add(104, receipt_value({&other}));
  log.add(107, receipt_value({&other, &row}));
  log.covered_to(110);
  auto verdict = decide_in_doubt(row, log);
  EXPECT_EQ(verdict.kind, DoubtVerdict::Kind::applied);
  EXPECT_EQ(verdict.revision, 107);
  EXPECT_EQ(decide_in_doubt(other, log).revision, 104);
}

TEST(DecideInDoubt, ABarrierAtOrBelowTheAttemptMeansEtcdWentBackAndTheAttemptIsNotInItsHistory) {
  // A barrier is raised after the attempt, so in one timeline it is always above it. etcd was
  // restored from a snapshot older than the attempt: its history as it now stands ends below it.
  auto row = doubtful(12, "/k", "v", 200);
  ReceiptLog log(201);
  log.covered_to(150);
  auto verdict = decide_in_doubt(row, log);
  EXPECT_EQ(verdict.kind, DoubtVerdict::Kind::not_applied);
  EXPECT_TRUE(verdict.etcd_went_back);
  auto at_barrier = doubtful(13, "/j", "v", 150);
  EXPECT_TRUE(decide_in_doubt(at_barrier, log).etcd_went_back);
  // In one timeline no verdict says so.
  auto before = doubtful(14, "/i", "v", 100);
  ReceiptLog usual(101);
  usual.covered_to(150);
  EXPECT_FALSE(decide_in_doubt(before, usual).etcd_went_back);
}

TEST(DecideInDoubt, NoReceiptUpToTheBarrierMeansNotApplied) {
  auto row = doubtful(12, "/k", "v", 100);
  ReceiptLog log(101);
  log.add(104, "v1 ");
  log.add(105, "not a receipt");
  log.covered_to(110);
  EXPECT_EQ(decide_in_doubt(row, log).kind, DoubtVerdict::Kind::not_applied);
}

TEST(DecideInDoubt, AReceiptForTheSameIdWithOtherContentIsAnotherRow) {
  // After a lossy PostgreSQL failover the id came back for a different change.
  auto lost = doubtful(12, "/k", "old", 100);
  auto reissued = doubtful(12, "/k", "new", 100);
  ReceiptLog log(101);
  log.add(104, receipt_value({&lost}));
  log.covered_to(110);
  EXPECT_EQ(decide_in_doubt(reissued, log).kind, DoubtVerdict::Kind::not_applied);
  EXPECT_EQ(decide_in_doubt(lost, log).kind, DoubtVerdict::Kind::applied);
}

TEST(DecideInDoubt, AReceiptOlderThanTheAttemptIsNotIts) {
  auto row = doubtful(12, "/k", "v", 100);
  ReceiptLog log(90);
  log.add(95, receipt_value({&row}));  // a row with this id and content before a failover
  log.covered_to(110);
  EXPECT_EQ(decide_in_doubt(row, log).kind, DoubtVerdict::Kind::not_applied);
}

TEST(DecideInDoubt, AnOlderReceiptWithTheSameContentDoesNotHideTheAttemptsOwn) {
  // The log starts at 91 for another row in the batch; id 12 with this content was applied at 95
  // before a failover handed the id out again, and this row's own attempt landed at 104.
  auto row = doubtful(12, "/k", "v", 100);
  auto earlier = doubtful(13, "/j", "w", 90);
  ReceiptLog log(91);
  log.add(95, receipt_value({&row}));
  log.add(104, receipt_value({&row}));
  log.covered_to(110);
  auto verdict = decide_in_doubt(row, log);
  EXPECT_EQ(verdict.kind, DoubtVerdict::Kind::applied);
  EXPECT_EQ(verdict.revision, 104);
  EXPECT_EQ(decide_in_doubt(earlier, log).kind, DoubtVerdict::Kind::not_applied);
}

TEST(DecideInDoubt, AReceiptPastTheBarrierIsNotEvidence) {
  // No attempt sent before the barrier can land after it: a receipt read past the barrier (in the
  // same watch response as the barrier's event) is from a later Txn.
  auto row = doubtful(12, "/k", "v", 100);
  ReceiptLog log(101);
  log.add(112, receipt_value({&row}));
  log.covered_to(110);
  EXPECT_EQ(decide_in_doubt(row, log).kind, DoubtVerdict::Kind::not_applied);
}

TEST(DecideInDoubt, CompactedHistoryIsUnknownAndSaysSo) {
  auto row = doubtful(12, "/k", "v", 100);
  ReceiptLog log(101);
  log.compacted_to(150);
  log.covered_to(160);
  EXPECT_EQ(log.from_revision(), 150);
  EXPECT_EQ(decide_in_doubt(row, log).kind, DoubtVerdict::Kind::unknown);
  auto outcome = unknown_outcome(row, log);
  EXPECT_EQ(outcome.status, WalStatus::failed);
  EXPECT_NE(outcome.error_message.find("outcome unknown"), std::string::npos) << outcome.error_message;
  EXPECT_NE(outcome.error_message.find("150"), std::string::npos) << outcome.error_message;
  // A receipt after the compaction still counts.
  log.add(155, receipt_value({&row}));
  EXPECT_EQ(decide_in_doubt(row, log).kind, DoubtVerdict::Kind::applied);
  // A row attempted after the compaction point is fully covered.
  auto later = doubtful(14, "/x", "v", 149);
  EXPECT_EQ(decide_in_doubt(later, log).kind, DoubtVerdict::Kind::not_applied);
}

TEST(AppliedOutcome, ADeleteFoundAbsentIsASuccessWithNoRevision) {
  WalRow del;
  del.id = 1;
  del.key = "/k";
  auto outcome = applied_outcome(del, 70, false);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_TRUE(outcome.nothing_deleted);
  EXPECT_EQ(outcome.revision, 0);
  outcome = applied_outcome(del, 70, true);
  EXPECT_FALSE(outcome.nothing_deleted);
  EXPECT_EQ(outcome.revision, 70);
  del.revision = 5;  // etcd_wins compared mod_revision 5: the key was there
  EXPECT_EQ(applied_outcome(del, 71, std::nullopt).revision, 71);
}

}  // namespace
}  // namespace etcd_sync
