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
  // Issue 10, finding 3: a delete that found the key gone, recorded at the Txn's header revision
  // (instead of as one that deleted nothing).
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

}  // namespace
}  // namespace etcd_sync::chaos
