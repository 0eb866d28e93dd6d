// How a claimed row enters its batch, and what a group of rows does after each Txn
// (reactor/outbox/txn_group.hpp): the outbox's split and retry policy.

#include "reactor/outbox/txn_group.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace etcd_sync {
namespace {

Attempt attempt(std::int64_t id, const std::string& key) {
  Attempt a;
  a.row.id = id;
  a.row.key = key;
  a.row.value = "v";
  a.row.claim_revision = 100 + id;
  return a;
}

std::vector<Attempt*> pointers(std::vector<Attempt>& attempts) {
  std::vector<Attempt*> out;
  for (auto& a : attempts) out.push_back(&a);
  return out;
}

WalOutcome success_at(std::int64_t revision) { return WalOutcome{WalStatus::success, revision, "", false, false, false}; }

const SyncError kNoLeader(ErrorKind::transient, "etcd Txn at 127.0.0.1:1: etcdserver: no leader (grpc code 14)");
const SyncError kTooLarge(ErrorKind::permanent, "etcd Txn: etcdserver: request is too large (grpc code 3)");
const SyncError kOdd(ErrorKind::permanent, "etcd Txn: something new (grpc code 2)");

TEST(Admit, ARowEtcdMustNotTakeFailsAtOnce) {
  auto outside = attempt(1, "/other/k");
  admit(outside, "/app/", "/etcd-sync/election/");
  ASSERT_TRUE(outside.outcome);
  EXPECT_EQ(outside.outcome->status, WalStatus::failed);
  EXPECT_FALSE(outside.outcome->error_message.empty());
  EXPECT_FALSE(outside.in_doubt);

  auto own = attempt(2, "/etcd-sync/election/x");
  admit(own, "/", "/etcd-sync/election/");
  ASSERT_TRUE(own.outcome) << "etcd-sync's own keys are never written from etcd_wal";
  EXPECT_EQ(own.outcome->status, WalStatus::failed);
}

TEST(Admit, ARowWithAnAttemptRevisionIsInDoubtAnyOtherIsSent) {
  auto earlier = attempt(1, "/app/a");
  earlier.row.attempt_revision = 40;
  admit(earlier, "/app/", "/etcd-sync/election/");
  EXPECT_FALSE(earlier.outcome);
  EXPECT_TRUE(earlier.in_doubt) << "an earlier attempt may have reached etcd: its receipt decides";

  auto fresh = attempt(2, "/app/b");
  admit(fresh, "/app/", "/etcd-sync/election/");
  EXPECT_FALSE(fresh.outcome);
  EXPECT_FALSE(fresh.in_doubt);

  auto rejected_in_doubt = attempt(3, "");
  rejected_in_doubt.row.attempt_revision = 40;
  admit(rejected_in_doubt, "/app/", "/etcd-sync/election/");
  EXPECT_TRUE(rejected_in_doubt.outcome) << "a row etcd cannot take is failed, in doubt or not";
  EXPECT_FALSE(rejected_in_doubt.in_doubt);
}

TEST(AfterTxnError, AnOutageLeavesEveryRowInDoubtFromItsClaimRevision) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b")};
  attempts[1].row.attempt_revision = 7;  // in doubt before, from an earlier attempt
  auto group = pointers(attempts);
  EXPECT_EQ(after_txn_error(group, kNoLeader, 3), GroupNext::outage);
  for (const auto& a : attempts) {
    EXPECT_TRUE(a.in_doubt);
    EXPECT_FALSE(a.outcome) << "the attempt is not spent";
  }
  EXPECT_EQ(attempts[0].row.attempt_revision, 101) << "below every write of this claim's attempts";
  EXPECT_EQ(attempts[1].row.attempt_revision, 7) << "an earlier attempt's revision is kept: it is lower";

  std::vector<Attempt> cancelled{attempt(3, "/c")};
  auto lone = pointers(cancelled);
  EXPECT_EQ(after_txn_error(lone, SyncError(ErrorKind::cancelled, "stopping"), 3), GroupNext::outage)
      << "a cancelled call may have reached etcd too";
  EXPECT_TRUE(cancelled[0].in_doubt);
}

TEST(AfterTxnError, ARefusedGroupIsSentOneByOne) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b")};
  auto group = pointers(attempts);
  EXPECT_EQ(after_txn_error(group, kTooLarge, 3), GroupNext::one_by_one);
  EXPECT_EQ(after_txn_error(group, kOdd, 3), GroupNext::one_by_one);
  for (const auto& a : attempts) {
    EXPECT_FALSE(a.outcome) << "each row alone gets its own answer";
    EXPECT_FALSE(a.in_doubt);
  }
}

TEST(AfterTxnError, ARefusedLoneRowIsDecided) {
  std::vector<Attempt> attempts{attempt(1, "/a")};
  auto group = pointers(attempts);
  EXPECT_EQ(after_txn_error(group, kTooLarge, 3), GroupNext::done);
  ASSERT_TRUE(attempts[0].outcome);
  EXPECT_EQ(attempts[0].outcome->status, WalStatus::failed) << "a refusal of the request fails at once";

  std::vector<Attempt> odd{attempt(2, "/b")};
  auto lone = pointers(odd);
  EXPECT_EQ(after_txn_error(lone, kOdd, 3), GroupNext::done);
  ASSERT_TRUE(odd[0].outcome);
  EXPECT_EQ(odd[0].outcome->status, WalStatus::retry) << "an error not understood counts as an attempt";
  odd[0].outcome.reset();
  odd[0].row.retry_count = 2;
  EXPECT_EQ(after_txn_error(lone, kOdd, 3), GroupNext::done);
  EXPECT_EQ(odd[0].outcome->status, WalStatus::failed) << "up to max_attempts";
}

TEST(AfterTxnAnswer, DeposedAndFencedDecideNothing) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b")};
  auto group = pointers(attempts);
  TxnVerdict deposed;
  deposed.deposed = true;
  deposed.outcomes.resize(2);
  EXPECT_EQ(after_txn_answer(group, deposed), GroupNext::deposed);
  TxnVerdict fenced;
  fenced.fenced = true;
  fenced.barrier_revision = 9;
  fenced.outcomes.resize(2);
  EXPECT_EQ(after_txn_answer(group, fenced), GroupNext::fenced);
  EXPECT_EQ(group.size(), 2u);
  for (const auto& a : attempts) EXPECT_FALSE(a.outcome);
}

TEST(AfterTxnAnswer, EveryRowDecidedEndsTheGroup) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b")};
  auto group = pointers(attempts);
  TxnVerdict verdict;
  verdict.outcomes = {success_at(50), success_at(50)};
  EXPECT_EQ(after_txn_answer(group, verdict), GroupNext::done);
  EXPECT_TRUE(group.empty());
  ASSERT_TRUE(attempts[0].outcome && attempts[1].outcome);
  EXPECT_EQ(attempts[1].outcome->revision, 50);
}

TEST(AfterTxnAnswer, RowsStoppedByAnotherRowsConflictAreSentAgainWithoutIt) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b"), attempt(3, "/c")};
  auto group = pointers(attempts);
  TxnVerdict verdict;
  verdict.outcomes.resize(3);
  verdict.outcomes[1] = WalOutcome{WalStatus::conflict, 0, "etcd has a newer value", false, false, false};
  EXPECT_EQ(after_txn_answer(group, verdict), GroupNext::resend);
  ASSERT_EQ(group.size(), 2u);
  EXPECT_EQ(group[0], &attempts[0]);
  EXPECT_EQ(group[1], &attempts[2]) << "in order, without the conflicting row";
  ASSERT_TRUE(attempts[1].outcome);
  EXPECT_EQ(attempts[1].outcome->status, WalStatus::conflict);
  EXPECT_FALSE(attempts[0].outcome);
}

TEST(AfterTxnAnswer, NoConflictToldApartSendsEachRowAlone) {
  std::vector<Attempt> attempts{attempt(1, "/a"), attempt(2, "/b")};
  auto group = pointers(attempts);
  TxnVerdict verdict;
  verdict.outcomes.resize(2);
  EXPECT_EQ(after_txn_answer(group, verdict), GroupNext::one_by_one);
  EXPECT_EQ(group.size(), 2u) << "the group is kept whole, to be sent row by row";
}

TEST(GroupNext, NamesEachStep) {
  EXPECT_STREQ(to_string(GroupNext::one_by_one), "one_by_one");
  EXPECT_STREQ(to_string(GroupNext::outage), "outage");
}

}  // namespace
}  // namespace etcd_sync
