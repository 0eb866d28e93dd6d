// Watch events and snapshot pages -> rows of `etcd`: text vs. bytes, rejected keys, statements.

#include "reactor/keys/keys.hpp"
#include "reactor/keys/pg_text.hpp"
#include "reactor/mirror/mirror_rows.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

mvccpb::Event event(mvccpb::Event::EventType type, const std::string& key, const std::string& value, std::int64_t rev) {
  mvccpb::Event e;
  e.set_type(type);
  e.mutable_kv()->set_key(key);
  e.mutable_kv()->set_value(value);
  e.mutable_kv()->set_mod_revision(rev);
  e.mutable_kv()->set_create_revision(rev);
  e.mutable_kv()->set_version(1);
  return e;
}

TEST(MirrorRows, TextValuesGoToValueAndOthersToValueBytes) {
  RejectedKey rejected;
  auto text = make_row("/k", "hello", 5, false, rejected);
  ASSERT_TRUE(text);
  EXPECT_EQ(text->value, "hello");
  EXPECT_FALSE(text->value_bytes);
  auto binary = make_row("/k", std::string("a\0b", 3), 6, false, rejected);
  ASSERT_TRUE(binary);
  EXPECT_FALSE(binary->value);
  EXPECT_EQ(binary->value_bytes, std::string("a\0b", 3));
  auto tombstone = make_row("/k", "ignored", 7, true, rejected);
  ASSERT_TRUE(tombstone);
  EXPECT_TRUE(tombstone->tombstone);
  EXPECT_FALSE(tombstone->value);
  EXPECT_FALSE(tombstone->value_bytes);
}

TEST(MirrorRows, KeysThatAreNotTextAreRejectedWithTheirBytes) {
  RejectedKey rejected;
  EXPECT_FALSE(make_row(std::string("/\xff", 2), "v", 9, false, rejected));
  EXPECT_EQ(rejected.key_bytes, std::string("/\xff", 2));
  EXPECT_EQ(rejected.value_bytes, "v");
  EXPECT_EQ(rejected.revision, 9);
  EXPECT_EQ(rejected.reason, "key is not valid UTF-8");
  EXPECT_FALSE(make_row(std::string("/\0", 2), "v", 10, true, rejected));
  EXPECT_EQ(rejected.reason, "key contains a NUL byte");
  EXPECT_FALSE(rejected.value_bytes);
}

TEST(MirrorBatch, CountsEventsAndCoversTheHighestRevision) {
  MirrorBatch batch;
  EXPECT_TRUE(batch.empty());
  batch.add_event(event(mvccpb::Event::PUT, "/a", "1", 11));
  batch.add_event(event(mvccpb::Event::DELETE, "/b", "", 12));
  batch.add_event(event(mvccpb::Event::PUT, std::string("/\xc3", 2), "x", 12));
  EXPECT_EQ(batch.puts(), 2);
  EXPECT_EQ(batch.deletes(), 1);
  EXPECT_EQ(batch.events(), 3u);
  EXPECT_EQ(batch.rows().size(), 2u);
  EXPECT_EQ(batch.rejected().size(), 1u);
  EXPECT_EQ(batch.revision(), 12);
  batch.advance_to(10);
  EXPECT_EQ(batch.revision(), 12);
  batch.advance_to(20);
  EXPECT_EQ(batch.revision(), 20);

  auto statements = batch.statements("/");
  ASSERT_EQ(statements.size(), 3u);  // rows, the rejected key, the checkpoint
  // Parallel arrays: key, value, value_bytes, revision, tombstone, create_revision, version, lease.
  ASSERT_EQ(statements[0].params.size(), 8u);
  EXPECT_TRUE(statements[0].prepare);
  EXPECT_NE(statements[0].sql.find("ON CONFLICT (key, revision) DO NOTHING"), std::string::npos);
  EXPECT_NE(statements[1].sql.find("etcd_sync_rejected"), std::string::npos);
  EXPECT_EQ(statements[2].params[1].value, "20");
}

TEST(MirrorBatch, ProgressAloneOnlyMovesTheCheckpoint) {
  MirrorBatch batch;
  batch.advance_to(42);
  EXPECT_FALSE(batch.empty());
  auto statements = batch.statements("");
  ASSERT_EQ(statements.size(), 1u);
  EXPECT_NE(statements[0].sql.find("greatest(etcd_sync_checkpoint.revision"), std::string::npos);
}

TEST(MirrorBatch, AnyBatchIsOneFixedStatementOverArrays) {
  MirrorBatch small, large;
  small.add_event(event(mvccpb::Event::PUT, "/bin", std::string("\x00\xff", 2), 7));
  small.add_event(event(mvccpb::Event::DELETE, "/gone", "", 8));
  for (int i = 0; i < 2500; ++i) large.add_event(event(mvccpb::Event::PUT, "/k" + std::to_string(i), "v", 100 + i));
  auto few = small.statements("/");
  auto many = large.statements("/");
  ASSERT_EQ(few.size(), 2u);  // the rows, then the checkpoint
  ASSERT_EQ(many.size(), 2u);
  EXPECT_EQ(few[0].sql, many[0].sql) << "one statement text, prepared once, whatever the batch size";
  ASSERT_EQ(few[0].params.size(), 8u);
  // Array literals: a binary value as bytea hex, a tombstone with neither value.
  EXPECT_EQ(few[0].params[0].value, R"({"/bin","/gone"})");
  EXPECT_EQ(few[0].params[1].value, "{NULL,NULL}");
  EXPECT_EQ(few[0].params[2].value, R"({"\\x00ff",NULL})");
  EXPECT_EQ(few[0].params[3].value, R"({"7","8"})");
  EXPECT_EQ(few[0].params[4].value, R"({"f","t"})");
  // etcd's metadata of the put; NULL on the tombstone.
  EXPECT_EQ(few[0].params[5].value, R"({"7",NULL})");
  EXPECT_EQ(few[0].params[6].value, R"({"1",NULL})");
  EXPECT_EQ(few[0].params[7].value, R"({"0",NULL})");
}

TEST(CopyLine, EscapesCopyTextAndWritesBytesAsHex) {
  std::string chunk;
  append_copy_line(chunk, MirrorRow{"/a\tb", std::string("line\nnext \\ end"), std::nullopt, 7, false, KeyMeta{3, 2, 0}});
  append_copy_line(chunk, MirrorRow{"/bin", std::nullopt, std::string("\x00\xff", 2), 8, false, KeyMeta{8, 1, 94}});
  append_copy_line(chunk, MirrorRow{"/gone", std::nullopt, std::nullopt, 9, true, std::nullopt});
  EXPECT_EQ(chunk,
            "/a\\tb\tline\\nnext \\\\ end\t\\N\t7\tf\t3\t2\t0\n"
            "/bin\t\\N\t\\\\x00ff\t8\tf\t8\t1\t94\n"
            "/gone\t\\N\t\\N\t9\tt\t\\N\t\\N\t\\N\n");
  std::string escapes;
  append_copy_text(escapes, "\\start middle\tand\r\nend\\");
  EXPECT_EQ(escapes, "\\\\start middle\\tand\\r\\nend\\\\");
  escapes.clear();
  append_copy_text(escapes, "nothing to escape");
  EXPECT_EQ(escapes, "nothing to escape");
  // Long fields are scanned eight bytes at a time: each escaped byte at every position, and bytes
  // near them that need no escape (0x0e, 0x5b, 0x5d, 0xff), come out right.
  const std::string plain = "0123456789abcdef\x0e\x5b\x5d\xff-0123456789abcdef";
  for (std::size_t at = 0; at <= plain.size(); ++at) {
    for (auto [raw, escaped] : {std::pair<char, const char*>{'\\', "\\\\"}, {'\t', "\\t"}, {'\n', "\\n"}, {'\r', "\\r"}}) {
      std::string got;
      append_copy_text(got, plain.substr(0, at) + raw + plain.substr(at));
      EXPECT_EQ(got, plain.substr(0, at) + escaped + plain.substr(at)) << "at " << at;
    }
  }
  EXPECT_EQ(copy_in_sql("etcd", "BEGIN; "), std::string("BEGIN; COPY etcd (") + kCopyColumns + ") FROM STDIN");
}

TEST(Keys, RangePagesAreSizedByBytes) {
  EXPECT_EQ(next_range_page_limit(0, 0), kRangeFirstPageKeys) << "nothing known yet";
  EXPECT_EQ(next_range_page_limit(150 * 1000, 1000), 50000) << "150-byte keys: capped at 50,000 keys";
  EXPECT_EQ(next_range_page_limit(1024 * 1000, 1000), 8192) << "1 KiB per key: 8 MiB pages";
  EXPECT_EQ(next_range_page_limit(20u * 1024 * 1024, 2), 1) << "values over 8 MiB: one key a page";
}

TEST(Keys, PrefixRangeFollowsEtcdsPrefixEnd) {
  EXPECT_EQ(prefix_range("/config/").key, "/config/");
  EXPECT_EQ(prefix_range("/config/").range_end, "/config0");
  EXPECT_EQ(prefix_range(std::string("a\xff", 2)).range_end, "b");
  auto all = prefix_range("/");
  EXPECT_EQ(all.key, std::string(1, '\0'));
  EXPECT_EQ(all.range_end, std::string(1, '\0'));
  EXPECT_EQ(prefix_range("").range_end, std::string(1, '\0'));
  EXPECT_EQ(prefix_range(std::string("\xff\xff", 2)).range_end, std::string(1, '\0'));
}

TEST(Keys, KeyInPrefixAndEffectivePrefix) {
  EXPECT_TRUE(key_in_prefix("/config/a", "/config/"));
  EXPECT_FALSE(key_in_prefix("/configx", "/config/"));
  EXPECT_TRUE(key_in_prefix("anything", "/"));
  EXPECT_TRUE(key_in_prefix("anything", ""));
  EXPECT_EQ(effective_prefix("/"), "");
  EXPECT_EQ(effective_prefix("/app/"), "/app/");
}

TEST(Keys, IsTextAcceptsValidUtf8WithoutNul) {
  EXPECT_TRUE(is_text(""));
  EXPECT_TRUE(is_text("plain ascii"));
  EXPECT_TRUE(is_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_text(std::string("a\0b", 3)));
  EXPECT_FALSE(is_text("\xff"));
  EXPECT_FALSE(is_text("\xc3"));                  // truncated
  EXPECT_FALSE(is_text("\xc0\xaf"));              // overlong '/'
  EXPECT_FALSE(is_text("\xed\xa0\x80"));          // surrogate
  EXPECT_FALSE(is_text("\xf4\x90\x80\x80"));      // above U+10FFFF
  EXPECT_FALSE(is_text("\xe2\x82"));              // truncated at the end
  // Longer values go eight bytes at a time while they are plain ASCII: every position counts.
  const std::string ascii = "0123456789abcdefghijklmnopqrstuv";
  EXPECT_TRUE(is_text(ascii));
  for (std::size_t at = 0; at < ascii.size(); ++at) {
    std::string nul = ascii, high = ascii;
    nul[at] = '\0';
    high[at] = '\xff';
    EXPECT_FALSE(is_text(nul)) << "NUL at " << at;
    EXPECT_FALSE(is_text(high)) << "0xff at " << at;
    EXPECT_TRUE(is_text(ascii.substr(0, at) + "\xc3\xa9" + ascii.substr(at))) << "é at " << at;
  }
  EXPECT_FALSE(is_text(ascii + "\xe2\x82"));  // truncated after a long plain stretch
  EXPECT_TRUE(is_text(std::string(ascii) + "\x7f\x01"));
}

TEST(MirrorBatches, CutsTransactionsAtBatchSizeBetweenRevisionsOnly) {
  MirrorBatches batches(3);
  auto event = [](const std::string& key, std::int64_t revision) {
    mvccpb::Event e;
    e.mutable_kv()->set_key(key);
    e.mutable_kv()->set_value("v");
    e.mutable_kv()->set_mod_revision(revision);
    return e;
  };
  for (std::int64_t r = 1; r <= 4; ++r) batches.add_event(event("/k" + std::to_string(r), r));
  // One Txn of five keys at revision 5 stays whole, past the cap.
  for (int i = 0; i < 5; ++i) batches.add_event(event("/t" + std::to_string(i), 5));
  batches.add_event(event("/z", 6));
  batches.advance_to(9);
  ASSERT_EQ(batches.batches().size(), 3u);
  EXPECT_EQ(batches.batches()[0].events(), 3u);
  EXPECT_EQ(batches.batches()[0].revision(), 3);
  EXPECT_EQ(batches.batches()[1].events(), 6u) << "revision 4, then all of revision 5";
  EXPECT_EQ(batches.batches()[2].events(), 1u);
  EXPECT_EQ(batches.revision(), 9) << "progress moves the last transaction's checkpoint";
  EXPECT_EQ(batches.events(), 10u);
  auto statements = batches.statements("");
  EXPECT_EQ(statements.front().sql, "BEGIN");
  EXPECT_EQ(statements.back().sql, "COMMIT");
  int commits = 0;
  for (const auto& s : statements) commits += s.sql == "COMMIT";
  EXPECT_EQ(commits, 3) << "each transaction commits on its own";
  MirrorBatches one(100);
  one.add_event(event("/a", 1));
  EXPECT_NE(one.statements("").front().sql, "BEGIN") << "a single transaction needs no BEGIN";
}

// A backlog is copied in runs of whole transactions: the runs' cuts are the transactions' (between
// revisions), and what follows each COPY moves the checkpoint to the run's revision.
TEST(MirrorBatches, CopyRunsJoinWholeTransactionsUpToTheCap) {
  MirrorBatches batches(2);
  auto put = [](const std::string& key, std::int64_t revision) {
    mvccpb::Event e;
    e.mutable_kv()->set_key(key);
    e.mutable_kv()->set_value("v");
    e.mutable_kv()->set_mod_revision(revision);
    return e;
  };
  for (std::int64_t r = 1; r <= 6; ++r) batches.add_event(put("/k" + std::to_string(r), r));
  for (int i = 0; i < 7; ++i) batches.add_event(put("/txn" + std::to_string(i), 7));  // one Txn of 7 puts
  mvccpb::Event bad = put("/bad\xff", 8);
  batches.add_event(bad);
  ASSERT_EQ(batches.batches().size(), 5u);  // 2, 2, 2, 7 (revision 7 stays whole), 1
  auto runs = batches.copy_runs(4);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0], (std::pair<std::size_t, std::size_t>{0, 2})) << "two transactions of 2 fit in 4";
  EXPECT_EQ(runs[1], (std::pair<std::size_t, std::size_t>{2, 3})) << "2 + 7 would not";
  EXPECT_EQ(runs[2], (std::pair<std::size_t, std::size_t>{3, 4})) << "a transaction above the cap is a run alone";
  EXPECT_EQ(runs[3], (std::pair<std::size_t, std::size_t>{4, 5}));
  EXPECT_EQ(batches.copy_runs(100).size(), 1u);

  auto tail = batches.after_copy("/", std::nullopt, 0, 2);
  ASSERT_EQ(tail.size(), 2u) << "no rejected key in the first run: the checkpoint and COMMIT";
  EXPECT_NE(tail[0].sql.find("etcd_sync_checkpoint"), std::string::npos);
  EXPECT_EQ(tail[0].params[1].value, "4");
  EXPECT_EQ(tail[1].sql, "COMMIT");
  PgStatement fence{"SELECT fence()", {}};
  auto last = batches.after_copy("/", fence, 4, 5);
  ASSERT_EQ(last.size(), 4u);
  EXPECT_NE(last[0].sql.find("etcd_sync_rejected"), std::string::npos) << "the key that is not UTF-8";
  EXPECT_EQ(last[1].params[1].value, "8");
  EXPECT_EQ(last[2].sql, "SELECT fence()") << "the fence comes last before COMMIT";

  // The rest of a backlog after a refused COPY: transactions from the run's first on, each its own.
  auto rest = batches.statements("/", std::nullopt, 2);
  int commits = 0;
  for (const auto& statement : rest) commits += statement.sql == "COMMIT";
  EXPECT_EQ(commits, 3);
}

}  // namespace
}  // namespace etcd_sync
