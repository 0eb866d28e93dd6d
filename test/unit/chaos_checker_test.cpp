// The fault suite's checker on small hand-made histories: a clean run passes, and each kind of
// violation is found and named. Receipts are made by the outbox's own receipt_value().
#include "test/chaos/checker.hpp"

#include "reactor/outbox/wal_txn.hpp"

#include <gtest/gtest.h>

#include <string>

namespace etcd_sync::chaos {
namespace {

/// A run built event by event: each helper appends to etcd's history and, for the outbox, the row.
class History {
 public:
  explicit History(ConflictMode mode = ConflictMode::etcd_wins) {
    input.prefix = "/c/";
    input.marker_prefix = "/m/del/";
    input.mode = mode;
  }

  /// An event in etcd and, unless `mirrored` is false, its row in the etcd table.
  void event(const std::string& key, std::optional<std::string> value, std::int64_t revision, bool mirrored = true) {
    input.history.push_back({key, value, revision});
    if (mirrored && key.rfind(input.prefix, 0) == 0) input.mirror.push_back({key, value, revision, !value.has_value()});
  }
  void etcd_put(const std::string& key, const std::string& value, std::int64_t revision) { event(key, value, revision); }
  /// An etcd-side delete: the delete and its marker at one revision.
  void etcd_delete(const std::string& key, std::int64_t revision) {
    event(key, std::nullopt, revision);
    event("/m/del/" + std::to_string(revision), key, revision);
  }
  WalRow& row(std::int64_t id, const std::string& key, std::optional<std::string> value, std::optional<std::int64_t> base,
              const std::string& status, std::optional<std::int64_t> revision) {
    WalRow r;
    r.id = id;
    r.key = key;
    r.value = std::move(value);
    r.base = base;
    r.status = status;
    r.revision = status == "success" ? revision : base;
    input.wal.push_back(r);
    return input.wal.back();
  }
  /// A success delete that found the key already absent: no revision, the outbox's note.
  WalRow& deleted_nothing(std::int64_t id, const std::string& key, std::optional<std::int64_t> base) {
    auto& r = row(id, key, std::nullopt, base, "success", std::nullopt);
    r.error_message = "nothing to delete: the key was already absent when the delete was applied";
    return r;
  }
  /// The receipt an outbox Txn applied at `revision` puts, naming the rows with `ids` as inserted.
  void receipt(std::int64_t revision, const std::vector<std::int64_t>& ids) {
    std::vector<etcd_sync::WalRow> rows;
    for (const auto id : ids) {
      for (const auto& r : input.wal) {
        if (r.id != id) continue;
        etcd_sync::WalRow inserted;
        inserted.id = r.id;
        inserted.key = r.key;
        inserted.value = r.value;
        inserted.revision = r.base;
        rows.push_back(inserted);
      }
    }
    std::vector<const etcd_sync::WalRow*> pointers;
    for (const auto& r : rows) pointers.push_back(&r);
    input.receipts.push_back(parse_receipt_event(revision, etcd_sync::receipt_value(pointers)));
  }

  CheckReport check() const { return check_run(input); }

  CheckInput input;
};

/// The violations of `check` in `report`, joined, for failure messages.
std::string messages(const CheckReport& report) {
  std::string out;
  for (const auto& v : report.violations) out += std::string(1, static_cast<char>(v.check)) + ": " + v.message + "\n";
  return out;
}

/// A run in which every rule holds: writers on both sides of one key and another.
History clean_run(ConflictMode mode = ConflictMode::etcd_wins) {
  History run(mode);
  run.etcd_put("/c/a", "e-1", 2);
  run.event("/c/a", "w-1", 3);                 // row 1: put on base 2
  run.row(1, "/c/a", "w-1", 2, "success", 3);
  run.receipt(3, {1});
  run.row(2, "/c/a", "w-2", 2, "conflict", {});  // stale base: etcd kept its value
  run.etcd_delete("/c/a", 4);
  run.row(3, "/c/a", std::nullopt, std::nullopt, "success", 5);  // a put on an absent key
  run.input.wal.back().value = "w-3";
  run.event("/c/a", "w-3", 5);
  run.receipt(5, {3});
  run.event("/c/a", std::nullopt, 6);          // row 4: delete on base 5
  run.row(4, "/c/a", std::nullopt, 5, "success", 6);
  run.receipt(6, {4});
  run.etcd_put("/c/b", "e-2", 7);
  run.deleted_nothing(10, "/c/c", std::nullopt);  // one Txn at 8: a delete of an absent key and a put
  run.row(11, "/c/b", "w-11", 7, "success", 8);
  run.event("/c/b", "w-11", 8);
  run.receipt(8, {10, 11});
  run.event("/outside", "x", 9);               // neither prefix nor marker: ignored
  return run;
}

TEST(ChaosChecker, CleanRunPasses) {
  const auto report = clean_run().check();
  EXPECT_TRUE(report.ok()) << messages(report);
  EXPECT_EQ(report.totals.at("etcd_wal rows"), 6u);
  EXPECT_EQ(report.totals.at("receipts"), 4u);
  EXPECT_NE(report.summary().find("(C) 0"), std::string::npos) << report.summary();
  EXPECT_NE(report.summary().find("(R) 0"), std::string::npos) << report.summary();
}

TEST(ChaosChecker, FingerprintIsTheOutboxsOfTheRowAsInserted) {
  WalRow row;
  row.id = 7;
  row.key = "/c/a";
  row.value = "w-7";
  row.base = 12;
  row.revision = 40;  // overwritten on success: not part of it
  etcd_sync::WalRow inserted;
  inserted.id = 7;
  inserted.key = "/c/a";
  inserted.value = "w-7";
  inserted.revision = 12;
  EXPECT_EQ(fingerprint(row), etcd_sync::row_fingerprint(inserted));
  row.base_known = false;
  EXPECT_EQ(fingerprint(row), std::nullopt);
  const auto receipt = parse_receipt_event(5, "v1 7:0000abcd,8:ffffffff");
  ASSERT_TRUE(receipt.entries);
  EXPECT_EQ(receipt.entries->size(), 2u);
  EXPECT_EQ(receipt.entries->at(1).fingerprint, 0xffffffffu);
  EXPECT_FALSE(parse_receipt_event(5, "garbage").entries);
}

TEST(ChaosChecker, CleanRunPassesUnderPostgresWinsWithoutItsConflict) {
  auto run = clean_run(ConflictMode::postgres_wins);
  run.input.wal.erase(run.input.wal.begin() + 1);  // postgres_wins has no conflicts
  const auto report = run.check();
  EXPECT_TRUE(report.ok()) << messages(report);
}

TEST(ChaosChecker, BaseNamingATombstoneMeansAbsent) {
  History run;
  run.etcd_put("/c/a", "e-1", 2);
  run.etcd_delete("/c/a", 3);
  run.event("/c/a", "w-1", 4);
  run.row(1, "/c/a", "w-1", 3, "success", 4);  // base 3 is the tombstone: "absent"
  run.receipt(4, {1});
  const auto report = run.check();
  EXPECT_TRUE(report.ok()) << messages(report);
}

TEST(ChaosChecker, MirrorDifferencesAreA) {
  auto run = clean_run();
  run.input.mirror.erase(run.input.mirror.begin());       // missing (a, 2)
  run.input.mirror.push_back({"/c/a", "w-9", 99, false});  // extra
  run.input.mirror[0].value = "changed";                   // different (a, 3)
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::mirror_is_history), 3u) << messages(report);
  EXPECT_EQ(report.violations.size(), 3u) << messages(report);
  EXPECT_NE(messages(report).find("missing from the etcd table"), std::string::npos);
  EXPECT_NE(messages(report).find("no event of etcd's history"), std::string::npos);
}

TEST(ChaosChecker, PendingRowIsB) {
  auto run = clean_run();
  run.row(5, "/c/b", "w-5", 7, "pending", {});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::nothing_pending), 1u) << messages(report);
  EXPECT_EQ(report.violations.size(), 1u) << messages(report);
}

TEST(ChaosChecker, SuccessAtAnotherRevisionIsC) {
  auto run = clean_run();
  run.input.wal[0].revision = 4;  // row 1's value is at 3
  const auto report = run.check();
  ASSERT_GE(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_NE(messages(report).find("row 1 "), std::string::npos) << messages(report);
  EXPECT_NE(messages(report).find("the value is at /c/a@3"), std::string::npos) << messages(report);
}

TEST(ChaosChecker, DoubleApplyIsC) {
  auto run = clean_run(ConflictMode::postgres_wins);
  run.input.wal.erase(run.input.wal.begin() + 1);
  run.event("/c/b", "w-1", 10);  // row 1's value written again
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_NE(messages(report).find("reached etcd 2 times"), std::string::npos) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "value applied more than once");
}

TEST(ChaosChecker, SuccessDeleteWithoutADeleteIsC) {
  // A delete that found the key gone but was recorded at the Txn's header revision (instead of as
  // one that deleted nothing) breaks C.
  auto run = clean_run();
  run.etcd_put("/c/b", "e-3", 10);
  run.row(5, "/c/a", std::nullopt, std::nullopt, "success", 10);
  run.receipt(10, {5});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_NE(messages(report).find("no delete of the key at revision 10"), std::string::npos) << messages(report);
  ASSERT_EQ(report.violations.size(), 1u);
  EXPECT_EQ(report.violations[0].kind, "no delete at its revision (the key was already gone)");
  EXPECT_NE(report.summary().find("        1 no delete at its revision (the key was already gone)\n"), std::string::npos)
      << report.summary();
}

TEST(ChaosChecker, SuccessDeleteClaimingAnEtcdSideDeleteIsC) {
  auto run = clean_run();
  run.row(5, "/c/a", std::nullopt, 3, "success", 4);  // revision 4 is the etcd writer's delete
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_NE(messages(report).find("etcd-side writer's"), std::string::npos) << messages(report);
}

TEST(ChaosChecker, TwoSuccessRowsClaimingOneDeleteIsC) {
  auto run = clean_run();
  run.row(5, "/c/a", std::nullopt, 5, "success", 6);  // row 4 already claims the delete at 6
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_NE(messages(report).find("all claim the one delete"), std::string::npos) << messages(report);
}

TEST(ChaosChecker, SuccessOffItsBaseIsCUnderEtcdWinsOnly) {
  History run;
  run.etcd_put("/c/a", "e-1", 2);
  run.etcd_put("/c/a", "e-2", 3);
  run.event("/c/a", "w-1", 4);
  run.row(1, "/c/a", "w-1", 2, "success", 4);  // applied on top of 3, not its base 2
  run.receipt(4, {1});
  run.event("/c/a", "w-2", 5);
  run.row(2, "/c/a", "w-2", std::nullopt, "success", 5);  // NULL base while the key exists
  run.receipt(5, {2});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 2u) << messages(report);
  EXPECT_NE(messages(report).find("not on its base 2"), std::string::npos) << messages(report);
  EXPECT_NE(messages(report).find("not on its base (absent)"), std::string::npos) << messages(report);

  run.input.mode = ConflictMode::postgres_wins;
  EXPECT_TRUE(run.check().ok()) << messages(run.check());
}

TEST(ChaosChecker, AppliedConflictOrFailedValueIsD) {
  auto run = clean_run();
  run.event("/c/b", "w-2", 10);  // row 2 (conflict) reached etcd after all
  run.row(5, "/c/b", "w-5", 7, "failed", {});
  run.event("/c/b", "w-5", 11);  // and a failed one
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::settled_never_applied), 2u) << messages(report);
  EXPECT_EQ(report.count(Check::no_write_without_success), 0u) << messages(report);
  EXPECT_EQ(report.count(Check::nothing_failed), 1u) << messages(report);
}

TEST(ChaosChecker, OutboxWriteWithoutSuccessRowIsE) {
  auto run = clean_run();
  run.event("/c/b", "w-77", 10);         // a value no row has
  run.event("/c/b", std::nullopt, 11);   // a delete without marker or receipt
  run.row(5, "/c/b", std::nullopt, 10, "conflict", {});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::no_write_without_success), 2u) << messages(report);
  EXPECT_EQ(report.violations.size(), 2u) << messages(report);
  EXPECT_EQ(report.violations[1].kind, "unattributed delete (no receipt at its revision)");
  EXPECT_NE(messages(report).find("no etcd_wal row has this value"), std::string::npos) << messages(report);
  EXPECT_NE(messages(report).find("suspect (its base fits the previous event): row 5"), std::string::npos)
      << messages(report);
}

TEST(ChaosChecker, MisplacedSuccessDeleteIsSuspectOfTheUnattributedOne) {
  // An in-doubt delete that landed at 3 but was recorded at a later no-op revision, by a Txn that
  // left no receipt.
  History run;
  run.etcd_put("/c/a", "e-1", 2);
  run.event("/c/a", std::nullopt, 3);
  run.etcd_put("/c/b", "e-2", 4);
  run.row(1, "/c/a", std::nullopt, 2, "success", 4);
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::no_write_without_success), 1u) << messages(report);
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  EXPECT_EQ(report.count(Check::receipts), 1u) << messages(report);
  EXPECT_NE(messages(report).find("suspect (success, but no delete at its revision): row 1"), std::string::npos)
      << messages(report);
}

TEST(ChaosChecker, SuccessDeleteRecordedAwayFromItsReceiptIsCAndR) {
  // The same, with its receipt at 3: the delete is the row's, recorded at the wrong revision.
  History run;
  run.etcd_put("/c/a", "e-1", 2);
  run.event("/c/a", std::nullopt, 3);
  run.etcd_put("/c/b", "e-2", 4);
  run.row(1, "/c/a", std::nullopt, 2, "success", 4);
  run.receipt(3, {1});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::no_write_without_success), 0u) << messages(report);
  EXPECT_EQ(report.count(Check::success_applied_once), 1u) << messages(report);
  ASSERT_EQ(report.count(Check::receipts), 1u) << messages(report);
  EXPECT_EQ(report.violations.back().kind, "receipt at another revision");
  EXPECT_NE(messages(report).find("r3 delete  [row 1 success rev 4 (receipt)]"), std::string::npos) << messages(report);
}

TEST(ChaosChecker, SuccessOutOfIdOrderIsF) {
  History run(ConflictMode::postgres_wins);
  run.event("/c/a", "w-2", 2);
  run.event("/c/a", "w-1", 3);
  run.row(1, "/c/a", "w-1", std::nullopt, "success", 3);
  run.row(2, "/c/a", "w-2", std::nullopt, "success", 2);
  run.receipt(2, {2});
  run.receipt(3, {1});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_in_id_order), 1u) << messages(report);
  EXPECT_EQ(report.violations.size(), 1u) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "before an earlier row");  // commit times unknown: not told apart
}

TEST(ChaosChecker, OutOfIdOrderAfterALateCommitIsANoteNotAViolation) {
  History run(ConflictMode::postgres_wins);
  run.event("/c/a", "w-2", 2);
  run.event("/c/a", "w-1", 3);
  auto& first = run.row(1, "/c/a", "w-1", std::nullopt, "success", 3);
  first.statement = "s-1.1";
  first.committed_at = 1000.0025;  // after row 2's INSERT
  auto& second = run.row(2, "/c/a", "w-2", std::nullopt, "success", 2);
  second.statement = "s-0.1";
  second.committed_at = 1000.0010;
  run.receipt(2, {2});
  run.receipt(3, {1});
  const auto report = run.check();
  EXPECT_TRUE(report.ok()) << messages(report);  // the outbox could not see row 1 yet
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_EQ(report.notes[0].kind, "before an earlier row that committed after it (a late commit)");
  EXPECT_NE(report.notes[0].message.find("row 1's INSERT (s-1.1) committed 1.500 ms after row 2's (s-0.1)"),
            std::string::npos)
      << report.notes[0].message;
  run.input.wal[0].committed_at = 1000.0005;  // committed first, still applied after: no excuse
  const auto again = run.check();
  EXPECT_TRUE(again.notes.empty());
  EXPECT_EQ(again.violations.at(0).kind, "before an earlier row");
}

TEST(ChaosChecker, DeleteThatDeletedNothingCountsInIdOrderAtItsReceipt) {
  History run(ConflictMode::postgres_wins);
  run.deleted_nothing(2, "/c/a", std::nullopt);
  run.receipt(2, {2});                          // applied at 2, before row 1 at 3
  run.event("/c/a", "w-1", 3);
  run.row(1, "/c/a", "w-1", std::nullopt, "success", 3);
  run.receipt(3, {1});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_in_id_order), 1u) << messages(report);
  EXPECT_EQ(report.violations.size(), 1u) << messages(report);
}

TEST(ChaosChecker, SuccessWithoutRevisionIsCUnlessItDeletedNothing) {
  auto run = clean_run();
  run.row(5, "/c/c", std::nullopt, std::nullopt, "success", std::nullopt);  // no note
  run.receipt(10, {5});
  run.row(6, "/c/c", "w-6", std::nullopt, "success", std::nullopt);  // a put
  run.input.wal.back().error_message = "nothing to delete: ...";
  run.receipt(11, {6});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::success_applied_once), 2u) << messages(report);
  EXPECT_EQ(report.violations.size(), 2u) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "no revision");
}

TEST(ChaosChecker, DeletedNothingWhileTheKeyExistedIsR) {
  auto run = clean_run(ConflictMode::postgres_wins);
  run.input.wal.erase(run.input.wal.begin() + 1);
  run.etcd_put("/c/c", "e-9", 10);
  run.deleted_nothing(12, "/c/c", std::nullopt);
  run.receipt(11, {12});  // /c/c held e-9 then
  const auto report = run.check();
  ASSERT_EQ(report.violations.size(), 1u) << messages(report);
  EXPECT_EQ(report.violations[0].check, Check::receipts);
  EXPECT_EQ(report.violations[0].kind, "deleted nothing, but the key existed");
  EXPECT_NE(messages(report).find("the key held e-9 (revision 10)"), std::string::npos) << messages(report);

  run.input.mode = ConflictMode::etcd_wins;  // its base (absent) did not hold either
  EXPECT_EQ(run.check().count(Check::success_applied_once), 1u) << messages(run.check());
}

TEST(ChaosChecker, DeletedNothingButADeleteAtItsReceiptIsR) {
  // A delete that did delete, settled as one that deleted nothing: the delete event is its Txn's.
  auto run = clean_run(ConflictMode::postgres_wins);
  run.input.wal.erase(run.input.wal.begin() + 1);
  run.etcd_put("/c/c", "e-9", 10);
  run.event("/c/c", std::nullopt, 11);
  run.deleted_nothing(12, "/c/c", std::nullopt);
  run.receipt(11, {12});
  const auto report = run.check();
  ASSERT_EQ(report.violations.size(), 1u) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "deleted nothing, but the key has an event at its receipt");
}

TEST(ChaosChecker, SuccessNamedByNoReceiptOrSeveralIsR) {
  auto run = clean_run();
  run.input.receipts.erase(run.input.receipts.begin());  // row 1's
  run.event("/c/a", std::nullopt, 10);
  run.receipt(10, {4});  // row 4's Txn applied a second time
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::receipts), 2u) << messages(report);
  EXPECT_NE(messages(report).find("row 1 (/c/a, put w-1"), std::string::npos) << messages(report);
  std::string kinds;
  for (const auto& v : report.violations) kinds += v.kind + ";";
  EXPECT_NE(kinds.find("success row named by no receipt;"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("success row named by several receipts;"), std::string::npos) << kinds;
}

TEST(ChaosChecker, ConflictOrFailedRowNamedByAReceiptIsR) {
  auto run = clean_run();
  run.etcd_put("/c/d", "e-9", 10);
  run.row(5, "/c/d", std::nullopt, 10, "failed", {});
  run.event("/c/d", std::nullopt, 11);
  run.receipt(11, {5});  // the failed delete was applied: D too
  run.receipt(12, {2});  // the conflict's Txn (its put is not in etcd: only R)
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::receipts), 2u) << messages(report);
  EXPECT_EQ(report.count(Check::settled_never_applied), 1u) << messages(report);
  EXPECT_EQ(report.count(Check::no_write_without_success), 0u) << messages(report);
  EXPECT_NE(messages(report).find("it deleted the key at revision 11"), std::string::npos) << messages(report);
  std::string kinds;
  for (const auto& v : report.violations) kinds += v.kind + ";";
  EXPECT_NE(kinds.find("failed row named by a receipt;"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("conflict row named by a receipt;"), std::string::npos) << kinds;
}

TEST(ChaosChecker, StrayReceiptsAreR) {
  auto run = clean_run();
  run.input.receipts.push_back(parse_receipt_event(10, "v1 99:00000001"));  // no such row
  run.input.receipts.push_back(parse_receipt_event(11, "v1 1:00000001"));   // row 1, another fingerprint
  run.input.receipts.push_back(parse_receipt_event(12, "hello"));
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::receipts), 3u) << messages(report);
  EXPECT_EQ(report.violations.size(), 3u) << messages(report);
  std::string kinds;
  for (const auto& v : report.violations) kinds += v.kind + ";";
  EXPECT_EQ(kinds, "receipt names no row;receipt names a row with another fingerprint;not a receipt;");
}

TEST(ChaosChecker, OutboxDeletesAreAttributedByTheirReceipt) {
  auto run = clean_run();
  run.etcd_put("/c/d", "e-9", 10);
  run.row(5, "/c/d", std::nullopt, 10, "pending", {});
  run.event("/c/d", std::nullopt, 11);
  run.receipt(11, {5});  // a pending row's delete
  run.etcd_put("/c/d", "e-10", 12);
  run.event("/c/d", std::nullopt, 13);
  run.row(6, "/c/e", "w-6", std::nullopt, "success", 13);
  run.event("/c/e", "w-6", 13);
  run.receipt(13, {6});  // a Txn of another key's row
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::no_write_without_success), 2u) << messages(report);
  EXPECT_EQ(report.count(Check::nothing_pending), 1u) << messages(report);
  EXPECT_EQ(report.violations.size(), 3u) << messages(report);
  std::string kinds;
  for (const auto& v : report.violations) kinds += v.kind + ";";
  EXPECT_NE(kinds.find("outbox delete without a success row;"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("unattributed delete (its receipt names no delete row of the key);"), std::string::npos) << kinds;
  EXPECT_NE(messages(report).find("receipt at r13: \"v1 6:"), std::string::npos) << messages(report);
}

TEST(ChaosChecker, UnknownBaseIsR) {
  auto run = clean_run(ConflictMode::postgres_wins);
  run.input.wal.erase(run.input.wal.begin() + 1);
  run.input.wal[0].base_known = false;  // row 1: its receipt still matches by id
  const auto report = run.check();
  ASSERT_EQ(report.violations.size(), 1u) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "base unknown");
}

TEST(ChaosChecker, ConflictUnderPostgresWinsIsG) {
  auto run = clean_run(ConflictMode::postgres_wins);  // still holds row 2's conflict
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::nothing_failed), 1u) << messages(report);
  EXPECT_EQ(report.violations.size(), 1u) << messages(report);
}

TEST(ChaosChecker, UnknownStatusIsS) {
  auto run = clean_run();
  run.row(5, "/c/b", "w-5", 7, "done", {});
  const auto report = run.check();
  EXPECT_EQ(report.count(Check::known_status), 1u) << messages(report);
}

TEST(ChaosChecker, ContextShowsTheKeysEventsAndWhoWroteThem) {
  auto run = clean_run();
  run.input.wal[0].revision = 4;
  const auto text = messages(run.check());
  EXPECT_NE(text.find("r3 put w-1  [row 1 success rev 4]"), std::string::npos) << text;
  EXPECT_NE(text.find("-> r4 delete  [etcd-side delete]"), std::string::npos) << text;
  EXPECT_NE(text.find("r2 put e-1  [etcd-side put]"), std::string::npos) << text;
}

// --- high availability (H), and etcd-sync's own keys under A --------------------------------------

/// Leadership that holds: chaos-0 led epoch 20, then (its key deleted) chaos-1 epoch 22; at the end
/// chaos-1 leads, chaos-0 stands by with its new key 30.
HaInput clean_ha() {
  HaInput ha;
  ha.campaign_prefix = "/e/campaign/";
  ha.campaign_history = {{"/e/campaign/chaos-0", "{}", 20}, {"/e/campaign/chaos-1", "{}", 22},
                         {"/e/campaign/chaos-0", std::nullopt, 29}, {"/e/campaign/chaos-0", "{}", 30}};
  ha.epoch_samples = {{1.0, 20, "chaos-0"}, {5.0, 21, "chaos-0"}, {5.2, 22, "chaos-1"}};
  ha.leads = {{"chaos-0", 20, "t1"}, {"chaos-1", 22, "t2"}};
  HaSnapshot end;
  end.keys = {{"chaos-1", 22, 7}, {"chaos-0", 30, 8}};
  end.leader_row = LeaderRow{22, "chaos-1"};
  end.rows = {{"chaos-0", "running", "standby", "standby", std::nullopt, 100, 0.4},
              {"chaos-1", "running", "leader", "leader", 22, 101, 0.2}};
  ha.final_snapshot = end;
  ha.instances = {{"chaos-0", 100}, {"chaos-1", 101}};
  return ha;
}

History clean_ha_run() {
  auto run = clean_run();
  run.input.election_prefix = "/e/";
  run.input.ha = clean_ha();
  return run;
}

/// The kinds of the violations of check H, joined by ";".
std::string ha_kinds(const CheckReport& report) {
  std::string kinds;
  for (const auto& v : report.violations)
    if (v.check == Check::high_availability) kinds += v.kind + ";";
  return kinds;
}

TEST(ChaosCheckerHa, CleanLeadershipPasses) {
  const auto report = clean_ha_run().check();
  EXPECT_TRUE(report.ok()) << messages(report);
  EXPECT_NE(report.summary().find("(H) 0"), std::string::npos) << report.summary();
  EXPECT_EQ(report.totals.at("epochs led"), 2u);
}

TEST(ChaosCheckerHa, EpochRowGoingDownIsH) {
  auto run = clean_ha_run();
  run.input.ha->epoch_samples.push_back({6.0, 21, "chaos-0"});
  const auto report = run.check();
  EXPECT_EQ(ha_kinds(report), "epoch went down;") << messages(report);
  EXPECT_NE(messages(report).find("from epoch 22 (chaos-1, at 5.200 s) to epoch 21 (chaos-0, at 6.000 s)"),
            std::string::npos)
      << messages(report);
}

TEST(ChaosCheckerHa, EpochLedTwiceOrNotByItsKeyIsH) {
  auto run = clean_ha_run();
  run.input.ha->leads.push_back({"chaos-0", 22, "t3"});  // chaos-1's key's revision, and led already
  const auto report = run.check();
  const auto kinds = ha_kinds(report);
  EXPECT_NE(kinds.find("led epoch is not its campaign key's create_revision;"), std::string::npos) << kinds;
  EXPECT_NE(kinds.find("epoch led twice;"), std::string::npos) << kinds;
  EXPECT_NE(messages(report).find("no put of /e/campaign/chaos-0 at revision 22"), std::string::npos) << messages(report);
}

TEST(ChaosCheckerHa, AnInstancesEpochsGoingDownIsH) {
  auto run = clean_ha_run();
  run.input.ha->campaign_history.push_back({"/e/campaign/chaos-1", std::nullopt, 31});
  run.input.ha->campaign_history.push_back({"/e/campaign/chaos-1", "{}", 32});
  run.input.ha->leads = {{"chaos-0", 20, "t1"}, {"chaos-1", 32, "t2"}, {"chaos-1", 22, "t3"}};
  EXPECT_EQ(ha_kinds(run.check()), "an instance's epochs went down;");
}

TEST(ChaosCheckerHa, NotExactlyOneAgreedLeaderAtTheEndIsH) {
  auto two = clean_ha_run();
  two.input.ha->final_snapshot->rows[0].role = "leader";
  two.input.ha->final_snapshot->rows[0].epoch = 20;
  auto report = two.check();
  EXPECT_EQ(ha_kinds(report), "not exactly one agreed leader at the end;");
  EXPECT_NE(messages(report).find("2 live instances have role leader: chaos-0 (epoch 20) chaos-1 (epoch 22)"),
            std::string::npos)
      << messages(report);

  auto none = clean_ha_run();
  none.input.ha->final_snapshot.reset();
  EXPECT_EQ(ha_kinds(none.check()), "no final look;");
}

TEST(ChaosCheckerHa, HaUnsettledNamesWhatIsOff) {
  const HaSnapshot good = *clean_ha().final_snapshot;
  const std::vector<ExpectedInstance> instances = {{"chaos-0", 100}, {"chaos-1", 101}};
  EXPECT_EQ(ha_unsettled(good, instances), std::nullopt);

  auto stale = good;
  stale.rows[0].heartbeat_age_seconds = 5;
  EXPECT_EQ(ha_unsettled(stale, instances), "chaos-0 is not live: state running, heartbeat 5.0 s ago");

  auto restarted = good;
  restarted.rows[1].pid = 99;  // the row of the process before a restart
  EXPECT_EQ(ha_unsettled(restarted, instances), "chaos-1's row is from pid 99, not from its process (pid 101)");

  auto none = good;
  none.rows[1].role = "standby";
  EXPECT_EQ(ha_unsettled(none, instances), "0 live instances have role leader");

  auto row_of_another = good;
  row_of_another.leader_row = LeaderRow{23, "chaos-1"};  // raised by hand: fenced, not yet stepped down
  EXPECT_EQ(ha_unsettled(row_of_another, instances),
            "chaos-1 has role leader with epoch 22, but etcd_sync_leader names chaos-1 with epoch 23");

  auto etcd_disagrees = good;
  std::swap(etcd_disagrees.keys[0], etcd_disagrees.keys[1]);
  etcd_disagrees.keys[0].create_revision = 21;
  EXPECT_EQ(ha_unsettled(etcd_disagrees, instances),
            "etcd's lowest campaign key is chaos-0's (create_revision 21), but chaos-1 leads with epoch 22");

  auto standby_without_key = good;
  standby_without_key.keys.pop_back();
  EXPECT_EQ(ha_unsettled(standby_without_key, instances), "1 campaign keys for 2 instances: a standby does not campaign");

  auto silent = good;
  silent.error = "etcd: unavailable";
  EXPECT_EQ(ha_unsettled(silent, instances), "could not look: etcd: unavailable");
}

TEST(ChaosCheckerHa, ContextNamesTheLeadersCampaignKey) {
  auto run = clean_ha_run();
  run.input.wal[0].revision = 4;  // a C violation, at revision 4: chaos-0 has not campaigned yet
  run.input.ha->campaign_history.insert(run.input.ha->campaign_history.begin(), {"/e/campaign/chaos-2", "{}", 1});
  const auto text = messages(run.check());
  EXPECT_NE(text.find("events of /c/a around revision 4 (the leader's campaign key there: chaos-2 (epoch 1)):"),
            std::string::npos)
      << text;
}

TEST(ChaosCheckerHa, OwnKeysAreNoHistoryAndNeverMirrored) {
  auto run = clean_ha_run();
  run.input.prefix = "/";  // the synchronized prefix covers the election prefix
  std::erase_if(run.input.history, [](const EtcdEvent& e) { return e.key == "/outside"; });  // mirrored now
  run.input.history.insert(run.input.history.begin(), {"/e/campaign/chaos-0", "{}", 1});
  EXPECT_TRUE(run.check().ok()) << messages(run.check());  // a campaign key in etcd's history is not mirrored
  run.input.mirror.push_back({"/e/campaign/chaos-0", "{}", 1, false});
  const auto report = run.check();
  ASSERT_EQ(report.violations.size(), 1u) << messages(report);
  EXPECT_EQ(report.violations[0].kind, "election key mirrored");
}

}  // namespace
}  // namespace etcd_sync::chaos
