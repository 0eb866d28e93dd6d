// The rules for applying etcd_wal rows (reactor/outbox/wal_txn.hpp): the fenced Txn rows become,
// their receipt, what etcd's answer or error means for each row.

#include "reactor/outbox/wal_txn.hpp"

#include <gtest/gtest.h>

#include <string>

namespace etcd_sync {
namespace {

WalRow put_row(const std::string& key, const std::string& value, std::optional<std::int64_t> revision) {
  WalRow row;
  row.id = 1;
  row.key = key;
  row.value = value;
  row.revision = revision;
  return row;
}

WalRow delete_row(const std::string& key, std::optional<std::int64_t> revision) {
  WalRow row;
  row.id = 1;
  row.key = key;
  row.revision = revision;
  return row;
}

/// The outbox keys of the default election prefix with the barrier at revision 7; no term.
TxnFence barrier_at_seven() {
  TxnFence fence;
  fence.keys = outbox_keys("/etcd-sync/election/");
  fence.barrier_revision = 7;
  return fence;
}

const TxnFence kFence = barrier_at_seven();

/// A Txn answer: header revision, whether the compares held, and the mod_revision each Range saw
/// (0: absent), in order. A failed etcd_wins Txn reads the barrier first: failed_etcd_wins() adds it.
etcdserverpb::TxnResponse txn_response(std::int64_t header_revision, bool succeeded,
                                       const std::vector<std::int64_t>& read_mod_revisions) {
  etcdserverpb::TxnResponse response;
  response.mutable_header()->set_revision(header_revision);
  response.set_succeeded(succeeded);
  for (auto mod_revision : read_mod_revisions) {
    auto* range = response.add_responses()->mutable_response_range();
    if (mod_revision > 0) range->add_kvs()->set_mod_revision(mod_revision);
  }
  return response;
}

/// A failed etcd_wins answer: the barrier's read (as fenced: unchanged), then each key's.
etcdserverpb::TxnResponse failed_etcd_wins(std::int64_t header_revision, std::vector<std::int64_t> reads) {
  reads.insert(reads.begin(), kFence.barrier_revision);
  return txn_response(header_revision, false, reads);
}

std::vector<std::optional<WalOutcome>> decide(const std::vector<const WalRow*>& rows,
                                              const etcdserverpb::TxnResponse& response, ConflictResolution resolution) {
  auto verdict = decide_txn(rows, response, resolution, kFence);
  EXPECT_FALSE(verdict.fenced);
  return verdict.outcomes;
}

/// The first row's outcome when `row` is sent alone.
WalOutcome decide_one(const WalRow& row, const etcdserverpb::TxnResponse& response, ConflictResolution resolution) {
  auto outcomes = decide({&row}, response, resolution);
  EXPECT_EQ(outcomes.size(), 1u);
  EXPECT_TRUE(outcomes.at(0).has_value()) << "a row sent alone always gets an outcome";
  return outcomes.at(0).value_or(WalOutcome{});
}

bool mentions(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// ---- reject_reason ----

const std::string kElection = "/etcd-sync/election/";

TEST(RejectReason, EmptyKey) {
  auto reason = reject_reason(put_row("", "v", std::nullopt), "/", kElection);
  ASSERT_TRUE(reason.has_value());
  EXPECT_TRUE(mentions(*reason, "empty key")) << *reason;
}

TEST(RejectReason, KeyOutsidePrefixNamesThePrefix) {
  auto reason = reject_reason(put_row("/elsewhere/x", "v", std::nullopt), "/app/", kElection);
  ASSERT_TRUE(reason.has_value());
  EXPECT_TRUE(mentions(*reason, "\"/app/\"")) << *reason;
  // The prefix is a byte prefix: "/app" without its slash is outside "/app/".
  EXPECT_TRUE(reject_reason(put_row("/app", "v", std::nullopt), "/app/", kElection).has_value());
}

TEST(RejectReason, KeysUnderThePrefixPass) {
  EXPECT_EQ(reject_reason(put_row("/app/x", "v", std::nullopt), "/app/", kElection), std::nullopt);
  EXPECT_EQ(reject_reason(delete_row("/app/x/y", 5), "/app/", kElection), std::nullopt);
  // "/" (and "") synchronize the whole keyspace.
  EXPECT_EQ(reject_reason(put_row("anything", "v", std::nullopt), "/", kElection), std::nullopt);
  EXPECT_EQ(reject_reason(put_row("anything", "v", std::nullopt), "", kElection), std::nullopt);
}

TEST(RejectReason, KeysUnderTheElectionPrefixAreEtcdSyncsOwn) {
  auto reason = reject_reason(put_row("/etcd-sync/election/outbox/barrier", "v", std::nullopt), "/", kElection);
  ASSERT_TRUE(reason.has_value());
  EXPECT_TRUE(mentions(*reason, "election_prefix")) << *reason;
  EXPECT_TRUE(mentions(*reason, kElection)) << *reason;
  EXPECT_TRUE(reject_reason(delete_row("/etcd-sync/election/x", 3), "/etcd-sync/", kElection).has_value());
  EXPECT_EQ(reject_reason(put_row("/etcd-sync/other", "v", std::nullopt), "/", kElection), std::nullopt);
}

// ---- receipts ----

TEST(Receipt, NamesEveryRowByIdAndFingerprintAndParsesBack) {
  auto a = put_row("/a", "1", 5);
  a.id = 17;
  auto b = delete_row("/b", std::nullopt);
  b.id = 9000000001;
  auto value = receipt_value({&a, &b});
  EXPECT_TRUE(value.starts_with("v1 ")) << value;
  auto entries = parse_receipt(value);
  ASSERT_TRUE(entries.has_value()) << value;
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0], (ReceiptEntry{17, row_fingerprint(a)}));
  EXPECT_EQ((*entries)[1], (ReceiptEntry{9000000001, row_fingerprint(b)}));
}

TEST(Receipt, FingerprintTellsRowsThatShareAnIdApart) {
  auto row = put_row("/k", "v", 5);
  const auto fp = row_fingerprint(row);
  auto other_value = row;
  other_value.value = "w";
  auto other_key = row;
  other_key.key = "/j";
  auto other_base = row;
  other_base.revision = 6;
  auto as_delete = row;
  as_delete.value.reset();
  for (const auto* other : {&other_value, &other_key, &other_base, &as_delete}) EXPECT_NE(row_fingerprint(*other), fp);
  auto same = row;
  same.retry_count = 2;  // not part of what the row asks for
  same.attempt_token = 99;
  EXPECT_EQ(row_fingerprint(same), fp);
}

TEST(Receipt, OtherValuesAreNotReceipts) {
  EXPECT_FALSE(parse_receipt("").has_value());
  EXPECT_FALSE(parse_receipt("v2 1:00000001").has_value());
  EXPECT_FALSE(parse_receipt("v1 1").has_value());
  EXPECT_FALSE(parse_receipt("v1 x:1").has_value());
  EXPECT_FALSE(parse_receipt("v1 1:zz").has_value());
  auto empty = parse_receipt("v1 ");
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

// ---- build_txn ----

TEST(BuildTxn, EveryTxnComparesTheBarrierAndPutsAReceipt) {
  auto row = put_row("/k", "v", 42);
  for (auto mode : {ConflictResolution::etcd_wins, ConflictResolution::postgres_wins}) {
    auto txn = build_txn({&row}, mode, kFence);
    ASSERT_GE(txn.compare_size(), 1);
    EXPECT_EQ(txn.compare(0).key(), kFence.keys.barrier);
    EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::MOD);
    EXPECT_EQ(txn.compare(0).mod_revision(), kFence.barrier_revision);
    ASSERT_GE(txn.success_size(), 2);
    const auto& receipt = txn.success(txn.success_size() - 1);
    ASSERT_TRUE(receipt.has_request_put());
    EXPECT_EQ(receipt.request_put().key(), kFence.keys.receipt);
    EXPECT_EQ(receipt.request_put().value(), receipt_value({&row}));
    ASSERT_GE(txn.failure_size(), 1);
    EXPECT_EQ(txn.failure(0).request_range().key(), kFence.keys.barrier) << "a failed Txn says whether it was fenced";
  }
}

TEST(BuildTxn, RevisionComparesModRevision) {
  auto row = put_row("/k", "v", 42);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins, kFence);
  ASSERT_EQ(txn.compare_size(), 2);
  const auto& compare = txn.compare(1);
  EXPECT_EQ(compare.key(), "/k");
  EXPECT_EQ(compare.result(), etcdserverpb::Compare::EQUAL);
  EXPECT_EQ(compare.target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(compare.mod_revision(), 42);

  ASSERT_EQ(txn.success_size(), 2);
  ASSERT_TRUE(txn.success(0).has_request_put());
  EXPECT_EQ(txn.success(0).request_put().key(), "/k");
  EXPECT_EQ(txn.success(0).request_put().value(), "v");

  // etcd_wins: a failed compare writes nothing and reads etcd's current revision.
  ASSERT_EQ(txn.failure_size(), 2);
  ASSERT_TRUE(txn.failure(1).has_request_range());
  EXPECT_EQ(txn.failure(1).request_range().key(), "/k");
  EXPECT_EQ(txn.failure(1).request_range().range_end(), "") << "one key, not a range";
  EXPECT_TRUE(txn.failure(1).request_range().keys_only()) << "the value is not needed to name the revision";
}

TEST(BuildTxn, NullRevisionRequiresAbsentKey) {
  auto row = put_row("/k", "v", std::nullopt);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins, kFence);
  ASSERT_EQ(txn.compare_size(), 2);
  EXPECT_EQ(txn.compare(1).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(1).version(), 0);
  EXPECT_EQ(txn.compare(1).result(), etcdserverpb::Compare::EQUAL);
}

TEST(BuildTxn, TombstoneBaseRequiresAbsentKey) {
  auto row = put_row("/k", "v", 17);
  row.base_is_tombstone = true;
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins, kFence);
  ASSERT_EQ(txn.compare_size(), 2);
  EXPECT_EQ(txn.compare(1).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(1).version(), 0);
}

TEST(BuildTxn, NullValueDeletesTheKey) {
  auto row = delete_row("/k", 9);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins, kFence);
  ASSERT_GE(txn.success_size(), 1);
  ASSERT_TRUE(txn.success(0).has_request_delete_range());
  EXPECT_EQ(txn.success(0).request_delete_range().key(), "/k");
  EXPECT_EQ(txn.success(0).request_delete_range().range_end(), "") << "deletes one key only";
  EXPECT_EQ(txn.compare(1).target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(txn.compare(1).mod_revision(), 9);
}

TEST(BuildTxn, BinaryValueIsSentAsIs) {
  const std::string bytes("\x00\xff\x41", 3);
  auto row = put_row("/k", bytes, std::nullopt);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins, kFence);
  EXPECT_EQ(txn.success(0).request_put().value(), bytes);
}

TEST(BuildTxn, PostgresWinsReadsThenWritesComparingOnlyTheBarrier) {
  auto row = put_row("/k", "v", 42);
  auto del = delete_row("/d", std::nullopt);
  auto txn = build_txn({&row, &del}, ConflictResolution::postgres_wins, kFence);
  EXPECT_EQ(txn.compare_size(), 1) << "the writes happen whatever etcd holds";
  EXPECT_EQ(txn.failure_size(), 1);
  ASSERT_EQ(txn.success_size(), 5);
  // The reads come first, so they see etcd before this Txn's writes.
  EXPECT_EQ(txn.success(0).request_range().key(), "/k");
  EXPECT_EQ(txn.success(1).request_range().key(), "/d");
  EXPECT_EQ(txn.success(2).request_put().key(), "/k");
  EXPECT_EQ(txn.success(2).request_put().value(), "v");
  EXPECT_EQ(txn.success(3).request_delete_range().key(), "/d");
}

TEST(BuildTxn, SeveralRowsOneCompareWriteAndReadEachInRowOrder) {
  auto a = put_row("/a", "1", 5);
  auto b = delete_row("/b", 6);
  auto c = put_row("/c", "3", std::nullopt);
  auto txn = build_txn({&a, &b, &c}, ConflictResolution::etcd_wins, kFence);
  ASSERT_EQ(txn.compare_size(), 4);
  ASSERT_EQ(txn.success_size(), 4);
  ASSERT_EQ(txn.failure_size(), 4);
  EXPECT_EQ(txn.compare(1).mod_revision(), 5);
  EXPECT_EQ(txn.compare(2).mod_revision(), 6);
  EXPECT_EQ(txn.compare(3).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.success(0).request_put().key(), "/a");
  EXPECT_EQ(txn.success(1).request_delete_range().key(), "/b");
  EXPECT_EQ(txn.success(2).request_put().key(), "/c");
  EXPECT_EQ(txn.failure(1).request_range().key(), "/a");
  EXPECT_EQ(txn.failure(2).request_range().key(), "/b");
  EXPECT_EQ(txn.failure(3).request_range().key(), "/c");
}

// ---- group_rows_for_txns ----

TEST(GroupRowsForTxns, FillsGroupsUpToEtcdsOperationLimit) {
  std::vector<WalRow> rows(300);
  std::vector<const WalRow*> pointers;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    rows[i] = put_row("/k" + std::to_string(i), "v", std::nullopt);
    pointers.push_back(&rows[i]);
  }
  auto groups = group_rows_for_txns(pointers, ConflictResolution::etcd_wins);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].size(), 126u) << "etcd's --max-txn-ops default, less the leader key and the barrier";
  EXPECT_EQ(groups[1].size(), 126u);
  EXPECT_EQ(groups[2].size(), 48u);
  EXPECT_EQ(groups[0].front(), 0u);
  EXPECT_EQ(groups[2].back(), 299u) << "in order, every row once";

  // The largest group etcd accepts: every branch and the compare list within 128 operations.
  std::vector<const WalRow*> largest(pointers.begin(), pointers.begin() + 126);
  TxnFence led = kFence;
  led.leader_key = "/etcd-sync/election/campaign/a";
  led.epoch = 3;
  auto txn = build_txn(largest, ConflictResolution::etcd_wins, led);
  EXPECT_LE(txn.compare_size(), kMaxTxnOps);
  EXPECT_LE(txn.success_size(), kMaxTxnOps);
  EXPECT_LE(txn.failure_size(), kMaxTxnOps);

  // postgres_wins: a read and a write per row in one branch, and the receipt.
  groups = group_rows_for_txns(pointers, ConflictResolution::postgres_wins);
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_EQ(groups[0].size(), 63u);
  EXPECT_EQ(groups[4].size(), 300u - 4 * 63);
  largest.assign(pointers.begin(), pointers.begin() + 63);
  EXPECT_LE(build_txn(largest, ConflictResolution::postgres_wins, led).success_size(), kMaxTxnOps);
  EXPECT_TRUE(group_rows_for_txns({}, ConflictResolution::etcd_wins).empty());
}

TEST(GroupRowsForTxns, LargeValuesSplitGroupsByBytes) {
  const std::string value_400k(400 * 1024, 'x');
  std::vector<WalRow> rows = {put_row("/a", value_400k, std::nullopt), put_row("/b", value_400k, std::nullopt),
                              put_row("/c", value_400k, std::nullopt), put_row("/d", "small", std::nullopt),
                              put_row("/e", std::string(2 * 1024 * 1024, 'y'), std::nullopt)};
  std::vector<const WalRow*> pointers;
  for (const auto& row : rows) pointers.push_back(&row);
  auto groups = group_rows_for_txns(pointers, ConflictResolution::etcd_wins);
  // Two 400 KiB values fit under 1 MiB, a third does not; a value over the limit goes alone.
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0], (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(groups[1], (std::vector<std::size_t>{2, 3}));
  EXPECT_EQ(groups[2], (std::vector<std::size_t>{4}));
}

// ---- decide_txn ----

TEST(DecideTxn, SucceededIsSuccessAtTheHeaderRevision) {
  auto outcome = decide_one(put_row("/k", "v", 42), txn_response(43, true, {}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_EQ(outcome.revision, 43);
  EXPECT_FALSE(outcome.conflict_resolved);
  EXPECT_FALSE(outcome.transient);
  EXPECT_FALSE(outcome.nothing_deleted);
  EXPECT_EQ(outcome.error_message, "");
}

TEST(DecideTxn, AMovedBarrierMeansNothingWasAppliedAndNamesTheNewOne) {
  auto row = put_row("/k", "v", 42);
  for (auto mode : {ConflictResolution::etcd_wins, ConflictResolution::postgres_wins}) {
    auto verdict = decide_txn({&row}, txn_response(90, false, {88, 42}), mode, kFence);
    EXPECT_TRUE(verdict.fenced);
    EXPECT_EQ(verdict.barrier_revision, 88);
    ASSERT_EQ(verdict.outcomes.size(), 1u);
    EXPECT_FALSE(verdict.outcomes[0].has_value()) << "not a conflict: the row is sent again";
  }
}

TEST(DecideTxn, FailedCompareWithEtcdWinsIsConflictNamingBothRevisions) {
  auto outcome = decide_one(put_row("/k", "v", 42), failed_etcd_wins(57, {51}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(outcome.conflict_resolved);
  EXPECT_FALSE(outcome.transient);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 51")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "etcd_wins")) << outcome.error_message;
}

TEST(DecideTxn, FailedCompareOnAbsentBaseSaysSo) {
  auto outcome = decide_one(put_row("/k", "v", std::nullopt), failed_etcd_wins(60, {55}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "absent")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 55")) << outcome.error_message;

  // The base revision exists but etcd has since deleted the key.
  outcome = decide_one(put_row("/k", "v", 42), failed_etcd_wins(60, {0}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "no such key")) << outcome.error_message;
}

TEST(DecideTxn, FailedGroupConflictsOnlyTheRowsWhoseBaseIsStale) {
  auto fresh = put_row("/a", "1", 10);
  auto stale = put_row("/b", "2", 11);
  auto created = put_row("/c", "3", std::nullopt);
  auto deleted_base = delete_row("/d", 12);
  auto outcomes = decide({&fresh, &stale, &created, &deleted_base}, failed_etcd_wins(20, {10, 15, 0, 0}),
                         ConflictResolution::etcd_wins);
  ASSERT_EQ(outcomes.size(), 4u);
  EXPECT_FALSE(outcomes[0].has_value()) << "its base held: send it again";
  ASSERT_TRUE(outcomes[1].has_value());
  EXPECT_EQ(outcomes[1]->status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcomes[1]->error_message, "mod_revision 15")) << outcomes[1]->error_message;
  EXPECT_FALSE(outcomes[2].has_value()) << "absent as expected";
  ASSERT_TRUE(outcomes[3].has_value()) << "the key it meant to delete is gone: a different state than its base";
  EXPECT_EQ(outcomes[3]->status, WalStatus::conflict);
}

TEST(DecideTxn, FailedGroupWithNoVisibleConflictIsSentRowByRow) {
  auto a = put_row("/a", "1", 10);
  auto b = put_row("/b", "2", std::nullopt);
  auto outcomes = decide({&a, &b}, failed_etcd_wins(20, {10, 0}), ConflictResolution::etcd_wins);
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_FALSE(outcomes[0].has_value());
  EXPECT_FALSE(outcomes[1].has_value());
}

TEST(DecideTxn, SucceededGroupIsSuccessForEveryRowAtOneRevision) {
  auto a = put_row("/a", "1", 10);
  auto b = delete_row("/b", 11);
  auto outcomes = decide({&a, &b}, txn_response(30, true, {}), ConflictResolution::etcd_wins);
  ASSERT_EQ(outcomes.size(), 2u);
  for (const auto& outcome : outcomes) {
    ASSERT_TRUE(outcome.has_value());
    EXPECT_EQ(outcome->status, WalStatus::success);
    EXPECT_EQ(outcome->revision, 30);
  }
}

TEST(DecideTxn, ADeleteOfAnAbsentKeyIsASuccessThatDeletedNothing) {
  // etcd_wins: the compare said the key was absent, so the delete had nothing to remove.
  auto outcome = decide_one(delete_row("/k", std::nullopt), txn_response(30, true, {}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_TRUE(outcome.nothing_deleted);
  EXPECT_EQ(outcome.revision, 0) << "no delete of the key happened at the Txn's revision";
  EXPECT_TRUE(mentions(outcome.error_message, "already absent")) << outcome.error_message;
  // postgres_wins: the read before the delete says whether the key was there.
  outcome = decide_one(delete_row("/k", 5), txn_response(31, true, {0}), ConflictResolution::postgres_wins);
  EXPECT_TRUE(outcome.nothing_deleted);
  outcome = decide_one(delete_row("/k", std::nullopt), txn_response(32, true, {9}), ConflictResolution::postgres_wins);
  EXPECT_FALSE(outcome.nothing_deleted);
  EXPECT_EQ(outcome.revision, 32);
}

TEST(DecideTxn, PostgresWinsIsSuccessAndCountsStaleBasesAsResolved) {
  auto outcome = decide_one(put_row("/k", "v", 42), txn_response(58, true, {51}), ConflictResolution::postgres_wins);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_EQ(outcome.revision, 58);
  EXPECT_TRUE(outcome.conflict_resolved);
  EXPECT_EQ(outcome.error_message, "");

  auto fresh = put_row("/a", "1", 10);
  auto absent = put_row("/b", "2", std::nullopt);
  auto tombstone_base = put_row("/c", "3", 7);
  tombstone_base.base_is_tombstone = true;
  auto outcomes = decide({&fresh, &absent, &tombstone_base}, txn_response(60, true, {10, 0, 9}),
                         ConflictResolution::postgres_wins);
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_FALSE(outcomes[0]->conflict_resolved);
  EXPECT_FALSE(outcomes[1]->conflict_resolved);
  EXPECT_TRUE(outcomes[2]->conflict_resolved) << "expected absent, etcd had it";
  for (const auto& o : outcomes) EXPECT_EQ(o->status, WalStatus::success);
}

// ---- the leader's fence ----

TxnFence leader_fence() {
  TxnFence fence = kFence;
  fence.leader_key = "/etcd-sync/election/campaign/node-1";
  fence.epoch = 40;
  return fence;
}

TEST(LeaderFence, EveryTxnAndTheBarrierCompareTheElectionKeysCreateRevision) {
  const auto fence = leader_fence();
  auto row = put_row("/k", "v", 42);
  for (const auto& txn : {build_txn({&row}, ConflictResolution::etcd_wins, fence),
                          build_txn({&row}, ConflictResolution::postgres_wins, fence), barrier_txn(fence)}) {
    ASSERT_GE(txn.compare_size(), 1);
    EXPECT_EQ(txn.compare(0).key(), fence.leader_key);
    EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::CREATE);
    EXPECT_EQ(txn.compare(0).create_revision(), 40);
    ASSERT_GE(txn.failure_size(), 1);
    EXPECT_EQ(txn.failure(0).request_range().key(), fence.leader_key);
  }
  auto barrier = barrier_txn(fence);
  ASSERT_EQ(barrier.success_size(), 1);
  EXPECT_EQ(barrier.success(0).request_put().key(), fence.keys.barrier);
}

TEST(LeaderFence, AGoneOrNewerElectionKeyDeposesAndIsNeverAConflict) {
  const auto fence = leader_fence();
  auto row = put_row("/k", "v", 42);
  for (std::int64_t leader_now : {0, 55}) {
    etcdserverpb::TxnResponse response;
    response.mutable_header()->set_revision(60);
    auto* range = response.add_responses()->mutable_response_range();
    if (leader_now) range->add_kvs()->set_create_revision(leader_now);
    response.add_responses()->mutable_response_range()->add_kvs()->set_mod_revision(fence.barrier_revision);
    response.add_responses()->mutable_response_range()->add_kvs()->set_mod_revision(51);  // the row's key moved too
    auto verdict = decide_txn({&row}, response, ConflictResolution::etcd_wins, fence);
    EXPECT_TRUE(verdict.deposed) << leader_now;
    EXPECT_FALSE(verdict.outcomes[0].has_value()) << "not a conflict: another instance decides the row";
    EXPECT_TRUE(deposed(response, fence));
  }
  // Still the leader, but the row's base is stale: an ordinary conflict.
  etcdserverpb::TxnResponse response;
  response.mutable_header()->set_revision(61);
  response.add_responses()->mutable_response_range()->add_kvs()->set_create_revision(40);
  response.add_responses()->mutable_response_range()->add_kvs()->set_mod_revision(fence.barrier_revision);
  response.add_responses()->mutable_response_range()->add_kvs()->set_mod_revision(51);
  auto verdict = decide_txn({&row}, response, ConflictResolution::etcd_wins, fence);
  EXPECT_FALSE(verdict.deposed);
  ASSERT_TRUE(verdict.outcomes[0].has_value());
  EXPECT_EQ(verdict.outcomes[0]->status, WalStatus::conflict);
}

// ---- errors ----

TEST(ClassifyTxnError, OutagesAreNotTheRowsFault) {
  for (const char* text : {"etcd Txn at 127.0.0.1:1: etcdserver: no leader (grpc code 14)",
                           "etcd Txn at 127.0.0.1:1: Deadline Exceeded (grpc code 4)",
                           "etcd Txn at 127.0.0.1:1: abandoned: the member has no leader"})
    EXPECT_EQ(classify_txn_error(SyncError(ErrorKind::transient, text)), TxnErrorKind::outage) << text;
  EXPECT_EQ(classify_txn_error(SyncError(ErrorKind::cancelled, "stopping")), TxnErrorKind::outage);
}

TEST(ClassifyTxnError, RefusalsOfTheRequestArePermanent) {
  for (const char* text : {"etcd Txn: etcdserver: request is too large (grpc code 3)",
                           "etcd Txn: grpc: received message larger than max (2200000 vs. 2097152) (grpc code 8)",
                           "etcd Txn: etcdserver: too many operations in txn request (grpc code 3)",
                           "etcd Txn: etcdserver: duplicate key given in txn request (grpc code 3)"})
    EXPECT_EQ(classify_txn_error(SyncError(ErrorKind::permanent, text)), TxnErrorKind::row_permanent) << text;
  EXPECT_EQ(classify_txn_error(SyncError(ErrorKind::permission_denied, "etcdserver: permission denied")),
            TxnErrorKind::row_permanent);
  EXPECT_EQ(classify_txn_error(SyncError(ErrorKind::permanent, "etcd Txn: something new (grpc code 2)")),
            TxnErrorKind::row_transient)
      << "an error not understood counts as an attempt";
}

TEST(DecideRowError, TooLargeFailsAtOnceNamingEtcdsLimit) {
  auto row = put_row("/k", std::string(2 * 1024 * 1024, 'x'), std::nullopt);
  auto outcome = decide_row_error(
      row, SyncError(ErrorKind::permanent, "etcd Txn: grpc: received message larger than max (2097900 vs. 2097152)"), 3);
  EXPECT_EQ(outcome.status, WalStatus::failed);
  EXPECT_FALSE(outcome.transient);
  EXPECT_TRUE(mentions(outcome.error_message, "--max-request-bytes")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, std::to_string(2 * 1024 * 1024 + 2))) << outcome.error_message;
}

TEST(DecideRowError, PermissionDeniedNamesTheKey) {
  auto outcome = decide_row_error(put_row("/secret/k", "v", std::nullopt),
                                  SyncError(ErrorKind::permission_denied, "etcd Txn: etcdserver: permission denied"), 3);
  EXPECT_EQ(outcome.status, WalStatus::failed);
  EXPECT_TRUE(mentions(outcome.error_message, "\"/secret/k\"")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "readwrite")) << outcome.error_message;
}

TEST(DecideRowError, AnErrorNotUnderstoodRetriesUntilMaxAttempts) {
  auto row = put_row("/k", "v", std::nullopt);
  row.retry_count = 1;
  const SyncError odd(ErrorKind::permanent, "etcd Txn at 127.0.0.1:1: something odd (grpc code 2)");
  auto outcome = decide_row_error(row, odd, 3);
  EXPECT_EQ(outcome.status, WalStatus::retry);
  EXPECT_TRUE(outcome.transient);
  EXPECT_STREQ(to_string(outcome.status), "pending") << "a retry leaves the row pending";
  row.retry_count = 2;
  outcome = decide_row_error(row, odd, 3);
  EXPECT_EQ(outcome.status, WalStatus::failed);
  EXPECT_TRUE(outcome.transient) << "the last attempt counts in retry_count too";
  EXPECT_TRUE(mentions(outcome.error_message, "3 attempts")) << outcome.error_message;
  row.retry_count = 0;
  EXPECT_EQ(decide_row_error(row, odd, 1).status, WalStatus::failed) << "max_attempts = 1: the first failure is final";
}

}  // namespace
}  // namespace etcd_sync
