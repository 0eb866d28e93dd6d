// The rules for applying one etcd_wal row (reactor/conflict.hpp): the Txn each row becomes, what
// etcd's answer or error means for the row, and how an attempt in doubt after a crash is settled.

#include "reactor/conflict.hpp"

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

/// A Txn answer: header revision, whether the compare held, and the key's mod_revision as the
/// trailing Range saw it (0: absent).
etcdserverpb::TxnResponse txn_response(std::int64_t header_revision, bool succeeded, std::int64_t range_mod_revision) {
  etcdserverpb::TxnResponse response;
  response.mutable_header()->set_revision(header_revision);
  response.set_succeeded(succeeded);
  response.add_responses()->mutable_response_put();
  auto* range = response.add_responses()->mutable_response_range();
  if (range_mod_revision > 0) range->add_kvs()->set_mod_revision(range_mod_revision);
  return response;
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
  auto txn = build_txn(put_row("/k", "v", 42), ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  const auto& compare = txn.compare(0);
  EXPECT_EQ(compare.key(), "/k");
  EXPECT_EQ(compare.result(), etcdserverpb::Compare::EQUAL);
  EXPECT_EQ(compare.target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(compare.mod_revision(), 42);

  ASSERT_EQ(txn.success_size(), 2);
  ASSERT_TRUE(txn.success(0).has_request_put());
  EXPECT_EQ(txn.success(0).request_put().key(), "/k");
  EXPECT_EQ(txn.success(0).request_put().value(), "v");
  ASSERT_TRUE(txn.success(1).has_request_range());
  EXPECT_EQ(txn.success(1).request_range().key(), "/k");
  EXPECT_EQ(txn.success(1).request_range().range_end(), "") << "one key, not a range";

  // etcd_wins: a failed compare writes nothing and reads etcd's current revision.
  ASSERT_EQ(txn.failure_size(), 1);
  ASSERT_TRUE(txn.failure(0).has_request_range());
  EXPECT_EQ(txn.failure(0).request_range().key(), "/k");
  EXPECT_TRUE(txn.failure(0).request_range().keys_only()) << "the value is not needed to name the revision";
}

TEST(BuildTxn, NullRevisionRequiresAbsentKey) {
  auto txn = build_txn(put_row("/k", "v", std::nullopt), ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(0).version(), 0);
  EXPECT_EQ(txn.compare(0).result(), etcdserverpb::Compare::EQUAL);
}

TEST(BuildTxn, TombstoneBaseRequiresAbsentKey) {
  auto row = put_row("/k", "v", 17);
  row.base_is_tombstone = true;
  auto txn = build_txn(row, ConflictResolution::etcd_wins);
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::VERSION);
  EXPECT_EQ(txn.compare(0).version(), 0);
}

TEST(BuildTxn, NullValueDeletesTheKey) {
  auto txn = build_txn(delete_row("/k", 9), ConflictResolution::etcd_wins);
  ASSERT_GE(txn.success_size(), 1);
  ASSERT_TRUE(txn.success(0).has_request_delete_range());
  EXPECT_EQ(txn.success(0).request_delete_range().key(), "/k");
  EXPECT_EQ(txn.success(0).request_delete_range().range_end(), "") << "deletes one key only";
  EXPECT_EQ(txn.compare(0).target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(txn.compare(0).mod_revision(), 9);
}

TEST(BuildTxn, BinaryValueIsSentAsIs) {
  const std::string bytes("\x00\xff\x41", 3);
  auto txn = build_txn(put_row("/k", bytes, std::nullopt), ConflictResolution::etcd_wins);
  EXPECT_EQ(txn.success(0).request_put().value(), bytes);
}

TEST(BuildTxn, PostgresWinsWritesOnBothBranches) {
  auto txn = build_txn(put_row("/k", "v", 42), ConflictResolution::postgres_wins);
  ASSERT_EQ(txn.failure_size(), 2);
  ASSERT_TRUE(txn.failure(0).has_request_put());
  EXPECT_EQ(txn.failure(0).request_put().value(), "v");
  EXPECT_TRUE(txn.failure(1).has_request_range());
  ASSERT_TRUE(txn.success(0).has_request_put());

  auto del = build_txn(delete_row("/k", std::nullopt), ConflictResolution::postgres_wins);
  ASSERT_GE(del.failure_size(), 1);
  EXPECT_TRUE(del.failure(0).has_request_delete_range());
}

// ---- decide_txn ----

TEST(DecideTxn, SucceededIsSuccessAtTheHeaderRevision) {
  auto outcome = decide_txn(put_row("/k", "v", 42), txn_response(43, true, 43), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_EQ(outcome.revision, 43);
  EXPECT_FALSE(outcome.conflict_resolved);
  EXPECT_FALSE(outcome.transient);
  EXPECT_EQ(outcome.error_message, "");
}

TEST(DecideTxn, FailedCompareWithEtcdWinsIsConflictNamingBothRevisions) {
  auto outcome = decide_txn(put_row("/k", "v", 42), txn_response(57, false, 51), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(outcome.conflict_resolved);
  EXPECT_FALSE(outcome.transient);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 51")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "etcd_wins")) << outcome.error_message;
}

TEST(DecideTxn, FailedCompareOnAbsentBaseSaysSo) {
  auto outcome = decide_txn(put_row("/k", "v", std::nullopt), txn_response(60, false, 55), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "absent")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "mod_revision 55")) << outcome.error_message;

  // The base revision exists but etcd has since deleted the key.
  outcome = decide_txn(put_row("/k", "v", 42), txn_response(60, false, 0), ConflictResolution::etcd_wins);
  EXPECT_EQ(outcome.status, WalStatus::conflict);
  EXPECT_TRUE(mentions(outcome.error_message, "revision 42")) << outcome.error_message;
  EXPECT_TRUE(mentions(outcome.error_message, "no such key")) << outcome.error_message;
}

TEST(DecideTxn, FailedCompareWithPostgresWinsIsSuccessAndCountsAsResolved) {
  auto outcome = decide_txn(put_row("/k", "v", 42), txn_response(58, false, 58), ConflictResolution::postgres_wins);
  EXPECT_EQ(outcome.status, WalStatus::success);
  EXPECT_EQ(outcome.revision, 58);
  EXPECT_TRUE(outcome.conflict_resolved);
  EXPECT_EQ(outcome.error_message, "");
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
