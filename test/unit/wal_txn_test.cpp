// The rules for applying one etcd_wal row (reactor/outbox/wal_txn.hpp): the Txn each row becomes, what
// etcd's answer or error means for the row, and how an attempt in doubt after a crash is settled.

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

mvccpb::KeyValue kv(const std::string& key, const std::string& value, std::int64_t mod_revision) {
  mvccpb::KeyValue out;
  out.set_key(key);
  out.set_value(value);
  out.set_mod_revision(mod_revision);
  out.set_create_revision(mod_revision);
  out.set_version(1);
  return out;
}

/// A Txn answer: header revision, whether the compares held, and for each key the mod_revision
/// its Range saw (0: absent), in row order.
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

/// The first row's outcome when `row` is sent alone.
WalOutcome decide_one(const WalRow& row, const etcdserverpb::TxnResponse& response, ConflictResolution resolution) {
  auto outcomes = decide_txn({&row}, response, resolution);
  EXPECT_EQ(outcomes.size(), 1u);
  EXPECT_TRUE(outcomes.at(0).has_value()) << "a row sent alone always gets an outcome";
  return outcomes.at(0).value_or(WalOutcome{});
}

bool mentions(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// ---- reject_reason ----

TEST(RejectReason, EmptyKey) {
  auto reason = reject_reason(put_row("", "v", std::nullopt), "/");
  ASSERT_TRUE(reason.has_value());
  EXPECT_TRUE(mentions(*reason, "empty key")) << *reason;
}

TEST(RejectReason, KeyOutsidePrefixNamesThePrefix) {
  auto reason = reject_reason(put_row("/elsewhere/x", "v", std::nullopt), "/app/");
  ASSERT_TRUE(reason.has_value());
  EXPECT_TRUE(mentions(*reason, "\"/app/\"")) << *reason;
  // The prefix is a byte prefix: "/app" without its slash is outside "/app/".
  EXPECT_TRUE(reject_reason(put_row("/app", "v", std::nullopt), "/app/").has_value());
}

TEST(RejectReason, KeysUnderThePrefixPass) {
  EXPECT_EQ(reject_reason(put_row("/app/x", "v", std::nullopt), "/app/"), std::nullopt);
  EXPECT_EQ(reject_reason(delete_row("/app/x/y", 5), "/app/"), std::nullopt);
  // "/" (and "") synchronize the whole keyspace.
  EXPECT_EQ(reject_reason(put_row("anything", "v", std::nullopt), "/"), std::nullopt);
  EXPECT_EQ(reject_reason(put_row("anything", "v", std::nullopt), ""), std::nullopt);
}

// ---- build_txn ----

TEST(BuildTxn, RevisionComparesModRevision) {
  auto row = put_row("/k", "v", 42);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  const auto& compare = txn.compare(0);
  EXPECT_EQ(compare.key(), "/k");
  EXPECT_EQ(compare.result(), etcdserverpb::Compare::EQUAL);
  EXPECT_EQ(compare.target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(compare.mod_revision(), 42);

  ASSERT_EQ(txn.success_size(), 1);
  ASSERT_TRUE(txn.success(0).has_request_put());
  EXPECT_EQ(txn.success(0).request_put().key(), "/k");
  EXPECT_EQ(txn.success(0).request_put().value(), "v");

  // etcd_wins: a failed compare writes nothing and reads etcd's current revision.
  ASSERT_EQ(txn.failure_size(), 1);
  ASSERT_TRUE(txn.failure(0).has_request_range());
  EXPECT_EQ(txn.failure(0).request_range().key(), "/k");
  EXPECT_EQ(txn.failure(0).request_range().range_end(), "") << "one key, not a range";
  EXPECT_TRUE(txn.failure(0).request_range().keys_only()) << "the value is not needed to name the revision";
}

TEST(BuildTxn, NullRevisionRequiresAbsentKey) {
  auto row = put_row("/k", "v", std::nullopt);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(0).version(), 0);
  EXPECT_EQ(txn.compare(0).result(), etcdserverpb::Compare::EQUAL);
}

TEST(BuildTxn, TombstoneBaseRequiresAbsentKey) {
  auto row = put_row("/k", "v", 17);
  row.base_is_tombstone = true;
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(0).version(), 0);
}

TEST(BuildTxn, NullValueDeletesTheKey) {
  auto row = delete_row("/k", 9);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins);
  ASSERT_GE(txn.success_size(), 1);
  ASSERT_TRUE(txn.success(0).has_request_delete_range());
  EXPECT_EQ(txn.success(0).request_delete_range().key(), "/k");
  EXPECT_EQ(txn.success(0).request_delete_range().range_end(), "") << "deletes one key only";
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(txn.compare(0).mod_revision(), 9);
}

TEST(BuildTxn, BinaryValueIsSentAsIs) {
  const std::string bytes("\x00\xff\x41", 3);
  auto row = put_row("/k", bytes, std::nullopt);
  auto txn = build_txn({&row}, ConflictResolution::etcd_wins);
  EXPECT_EQ(txn.success(0).request_put().value(), bytes);
}

TEST(BuildTxn, PostgresWinsReadsThenWritesWithoutACompare) {
  auto row = put_row("/k", "v", 42);
  auto del = delete_row("/d", std::nullopt);
  auto txn = build_txn({&row, &del}, ConflictResolution::postgres_wins);
  EXPECT_EQ(txn.compare_size(), 0) << "the writes happen whatever etcd holds";
  EXPECT_EQ(txn.failure_size(), 0);
  ASSERT_EQ(txn.success_size(), 4);
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
  auto txn = build_txn({&a, &b, &c}, ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 3);
  ASSERT_EQ(txn.success_size(), 3);
  ASSERT_EQ(txn.failure_size(), 3);
  EXPECT_EQ(txn.compare(0).mod_revision(), 5);
  EXPECT_EQ(txn.compare(1).mod_revision(), 6);
  EXPECT_EQ(txn.compare(2).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.success(0).request_put().key(), "/a");
  EXPECT_EQ(txn.success(1).request_delete_range().key(), "/b");
  EXPECT_EQ(txn.success(2).request_put().key(), "/c");
  EXPECT_EQ(txn.failure(0).request_range().key(), "/a");
  EXPECT_EQ(txn.failure(1).request_range().key(), "/b");
  EXPECT_EQ(txn.failure(2).request_range().key(), "/c");
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
  EXPECT_EQ(groups[0].size(), 128u) << "etcd's --max-txn-ops default";
  EXPECT_EQ(groups[1].size(), 128u);
  EXPECT_EQ(groups[2].size(), 44u);
  EXPECT_EQ(groups[0].front(), 0u);
  EXPECT_EQ(groups[2].back(), 299u) << "in order, every row once";

  // postgres_wins: a read and a write per row in one branch.
  groups = group_rows_for_txns(pointers, ConflictResolution::postgres_wins);
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_EQ(groups[0].size(), 64u);
  EXPECT_EQ(groups[4].size(), 300u - 4 * 64);
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
  EXPECT_EQ(outcome.error_message, "");
}

TEST(DecideTxn, FailedCompareWithEtcdWinsIsConflictNamingBothRevisions) {
  auto outcome = decide_one(put_row("/k", "v", 42), txn_response(57, false, {51}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(outcome.conflict_resolved);
  EXPECT_FALSE(outcome.transient);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 51")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "etcd_wins")) << outcome.error_message;
}

TEST(DecideTxn, FailedCompareOnAbsentBaseSaysSo) {
  auto outcome = decide_one(put_row("/k", "v", std::nullopt), txn_response(60, false, {55}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "absent")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 55")) << outcome.error_message;

  // The base revision exists but etcd has since deleted the key.
  outcome = decide_one(put_row("/k", "v", 42), txn_response(60, false, {0}), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "no such key")) << outcome.error_message;
}

TEST(DecideTxn, FailedGroupConflictsOnlyTheRowsWhoseBaseIsStale) {
  auto fresh = put_row("/a", "1", 10);
  auto stale = put_row("/b", "2", 11);
  auto created = put_row("/c", "3", std::nullopt);
  auto deleted_base = delete_row("/d", 12);
  auto outcomes = decide_txn({&fresh, &stale, &created, &deleted_base}, txn_response(20, false, {10, 15, 0, 0}),
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
  auto outcomes = decide_txn({&a, &b}, txn_response(20, false, {10, 0}), ConflictResolution::etcd_wins);
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_FALSE(outcomes[0].has_value());
  EXPECT_FALSE(outcomes[1].has_value());
}

TEST(DecideTxn, SucceededGroupIsSuccessForEveryRowAtOneRevision) {
  auto a = put_row("/a", "1", 10);
  auto b = delete_row("/b", 11);
  auto outcomes = decide_txn({&a, &b}, txn_response(30, true, {}), ConflictResolution::etcd_wins);
  ASSERT_EQ(outcomes.size(), 2u);
  for (const auto& outcome : outcomes) {
    ASSERT_TRUE(outcome.has_value());
    EXPECT_EQ(outcome->status, WalStatus::success);
    EXPECT_EQ(outcome->revision, 30);
  }
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
  auto outcomes = decide_txn({&fresh, &absent, &tombstone_base}, txn_response(60, true, {10, 0, 9}),
                             ConflictResolution::postgres_wins);
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_FALSE(outcomes[0]->conflict_resolved);
  EXPECT_FALSE(outcomes[1]->conflict_resolved);
  EXPECT_TRUE(outcomes[2]->conflict_resolved) << "expected absent, etcd had it";
  for (const auto& o : outcomes) EXPECT_EQ(o->status, WalStatus::success);
}

// ---- decide_error ----

TEST(DecideError, TransientErrorRetriesBeforeMaxAttempts) {
  auto row = put_row("/k", "v", std::nullopt);
  row.retry_count = 1;
  auto outcome = decide_error(row, SyncError(ErrorKind::transient, "etcd Txn at 127.0.0.1:1: unavailable"), 3);
  EXPECT_EQ(outcome.status, WalStatus::retry);
  EXPECT_TRUE(outcome.transient);
  EXPECT_EQ(outcome.error_message, "etcd Txn at 127.0.0.1:1: unavailable");
  EXPECT_STREQ(to_string(outcome.status), "pending") << "a retry leaves the row pending";
}

TEST(DecideError, TransientErrorFailsAtMaxAttempts) {
  auto row = put_row("/k", "v", std::nullopt);
  row.retry_count = 2;
  auto outcome = decide_error(row, SyncError(ErrorKind::transient, "deadline exceeded"), 3);
  EXPECT_EQ(outcome.status, WalStatus::failed);
  EXPECT_TRUE(outcome.transient) << "the last attempt counts in retry_count too";
  EXPECT_TRUE(mentions(outcome.error_message, "3 attempts")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "deadline exceeded")) << outcome.error_message;

  // max_attempts = 1: the first failure is final.
  row.retry_count = 0;
  EXPECT_EQ(decide_error(row, SyncError(ErrorKind::transient, "x"), 1).status, WalStatus::failed);
}

TEST(DecideError, PermanentErrorsFailAtOnce) {
  auto row = put_row("/k", "v", std::nullopt);
  for (auto kind : {ErrorKind::permanent, ErrorKind::permission_denied}) {
    auto outcome = decide_error(row, SyncError(kind, "etcd Txn: request is too large"), 10);
    EXPECT_EQ(outcome.status, WalStatus::failed) << to_string(kind);
    EXPECT_FALSE(outcome.transient) << to_string(kind);
    EXPECT_EQ(outcome.error_message, "etcd Txn: request is too large");
  }
}

// ---- decide_unknown_attempt ----

TEST(DecideUnknownAttempt, NoAttemptMeansApplyNormally) {
  auto row = put_row("/k", "v", std::nullopt);
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "v", 10), 10, ConflictResolution::etcd_wins), std::nullopt);
}

TEST(DecideUnknownAttempt, PutThatTookEffectIsSuccessAtItsRevision) {
  auto row = put_row("/k", "x", std::nullopt);
  row.attempt_revision = 9;
  auto decided = decide_unknown_attempt(row, kv("/k", "x", 10), 12, ConflictResolution::etcd_wins);
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->status, WalStatus::success);
  EXPECT_EQ(decided->revision, 10) << "the revision the write created, not the read's header";
  EXPECT_FALSE(decided->conflict_resolved);
}

TEST(DecideUnknownAttempt, PutThatDidNotHappenIsAppliedNormally) {
  auto row = put_row("/k", "x", std::nullopt);
  row.attempt_revision = 9;
  // The key is absent, or unchanged since before the attempt.
  EXPECT_EQ(decide_unknown_attempt(row, std::nullopt, 12, ConflictResolution::etcd_wins), std::nullopt);
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "old", 9), 12, ConflictResolution::etcd_wins), std::nullopt);
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "old", 5), 12, ConflictResolution::postgres_wins), std::nullopt);
}

TEST(DecideUnknownAttempt, KeyStillAtTheBaseRevisionMeansNothingWasWritten) {
  // attempt_revision lagged behind the row's base: the key changed after it, but only to the base.
  auto row = put_row("/k", "new", 20);
  row.attempt_revision = 15;
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "old", 20), 25, ConflictResolution::etcd_wins), std::nullopt);
  auto del = delete_row("/k", 20);
  del.attempt_revision = 15;
  EXPECT_EQ(decide_unknown_attempt(del, kv("/k", "old", 20), 25, ConflictResolution::etcd_wins), std::nullopt);
  // A tombstone base says "absent": a live key at that revision number proves nothing.
  row.base_is_tombstone = true;
  auto decided = decide_unknown_attempt(row, kv("/k", "other", 20), 25, ConflictResolution::etcd_wins);
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->status, WalStatus::conflict);
}

TEST(DecideUnknownAttempt, KeyChangedToAnotherValue) {
  auto row = put_row("/k", "x", 8);
  row.attempt_revision = 9;
  auto decided = decide_unknown_attempt(row, kv("/k", "someone-else", 11), 12, ConflictResolution::etcd_wins);
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->status, WalStatus::conflict);
  EXPECT_EQ(decided->revision, 12);
  EXPECT_TRUE(decided->conflict_resolved);
  EXPECT_TRUE(mentions(decided->error_message, "mod_revision 11")) << decided->error_message;
  EXPECT_TRUE(mentions(decided->error_message, "revision 8")) << decided->error_message;
  // postgres_wins writes again, unconditionally.
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "someone-else", 11), 12, ConflictResolution::postgres_wins),
            std::nullopt);
}

TEST(DecideUnknownAttempt, DeleteOfAnAbsentKeyIsDone) {
  auto row = delete_row("/k", 8);
  row.attempt_revision = 9;
  auto decided = decide_unknown_attempt(row, std::nullopt, 14, ConflictResolution::etcd_wins);
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->status, WalStatus::success);
  EXPECT_EQ(decided->revision, 14);
}

TEST(DecideUnknownAttempt, DeleteThatDidNotHappenOrWasOvertaken) {
  auto row = delete_row("/k", 8);
  row.attempt_revision = 9;
  // Unchanged since before the attempt: the delete did not happen.
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "v", 8), 14, ConflictResolution::etcd_wins), std::nullopt);
  // Written again after the attempt began.
  auto decided = decide_unknown_attempt(row, kv("/k", "v", 12), 14, ConflictResolution::etcd_wins);
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->status, WalStatus::conflict);
  EXPECT_TRUE(decided->conflict_resolved);
  EXPECT_EQ(decide_unknown_attempt(row, kv("/k", "v", 12), 14, ConflictResolution::postgres_wins), std::nullopt);
}

}  // namespace
}  // namespace etcd_sync
