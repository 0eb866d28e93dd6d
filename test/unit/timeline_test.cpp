// When etcd went back in time: reading response headers, and the search for the revision the
// mirror's rows are still held through.

#include "reactor/mirror/timeline.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>

namespace etcd_sync {
namespace {

TEST(ClusterIdText, IsLowercaseHexLikeEtcdctl) {
  EXPECT_EQ(cluster_id_text(0xcdf818194e3a8c32ULL), "cdf818194e3a8c32");
  EXPECT_EQ(cluster_id_text(0xffffffffffffffffULL), "ffffffffffffffff");
  EXPECT_EQ(cluster_id_text(0x1aULL), "1a");
}

TEST(ReadTimeline, SameClusterAtOrAboveTheCheckpointIsTheSameTimeline) {
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x1a, 100), TimelineSign::same);
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x1a, 250), TimelineSign::same);
}

TEST(ReadTimeline, AnotherClusterIdIsANewClusterWhateverTheRevision) {
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x2b, 250), TimelineSign::new_cluster);
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x2b, 50), TimelineSign::new_cluster);
}

TEST(ReadTimeline, ARevisionBelowTheCheckpointIsBehind) {
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x1a, 99), TimelineSign::behind);
  EXPECT_EQ(read_timeline(std::nullopt, 100, 0x1a, 99), TimelineSign::behind);
}

TEST(ReadTimeline, AZeroInTheHeaderSaysNothing) {
  // etcd's watch response for a compacted start revision carries revision 0.
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0x1a, 0), TimelineSign::same);
  EXPECT_EQ(read_timeline(std::string("1a"), 100, 0, 0), TimelineSign::same);
  EXPECT_EQ(read_timeline(std::nullopt, 100, 0, 0), TimelineSign::same);
}

TEST(ReadTimeline, NothingRecordedIsUnrecorded) {
  EXPECT_EQ(read_timeline(std::nullopt, 100, 0x1a, 100), TimelineSign::unrecorded);
  EXPECT_EQ(read_timeline(std::nullopt, 0, 0x1a, 1), TimelineSign::unrecorded);
}

/// Runs a search over mirrored revisions `rows` against a history that holds every revision up
/// to `restored_at`, differs above it, and is compacted at and below `compacted_at`.
KeptThroughSearch run_search(const std::set<std::int64_t>& rows, std::int64_t upper, std::int64_t restored_at,
                             std::int64_t compacted_at = 0) {
  KeptThroughSearch search(upper);
  int guard = 0;
  while (auto probe = search.next()) {
    EXPECT_LT(++guard, 200) << "the search does not end";
    if (guard >= 200) break;
    EXPECT_GE(*probe, 1);
    EXPECT_LE(*probe, upper);
    std::int64_t rows_at = 0;
    auto it = rows.upper_bound(*probe);
    if (it != rows.begin()) rows_at = *std::prev(it);
    RowsInHistory what = RowsInHistory::held;
    if (rows_at != 0 && rows_at <= compacted_at)
      what = RowsInHistory::compacted;
    else if (rows_at > restored_at)
      what = RowsInHistory::differ;
    search.result(*probe, rows_at, what);
  }
  return search;
}

TEST(KeptThroughSearch, FindsTheHighestMirroredRevisionAtOrBelowTheRestorePoint) {
  // Every revision mirrored: 1..214; etcd restored from a snapshot at 104.
  std::set<std::int64_t> rows;
  for (std::int64_t r = 1; r <= 214; ++r) rows.insert(r);
  auto search = run_search(rows, 214, 104);
  EXPECT_EQ(search.kept_through(), 104);
  EXPECT_FALSE(search.unproven());
  EXPECT_LE(search.probes(), 9);  // about log2(214)
}

TEST(KeptThroughSearch, StopsAtTheLastMirroredRevisionBelowTheRestorePoint) {
  // Sparse rows (other writes fall outside the prefix): the restore point itself has none.
  std::set<std::int64_t> rows{3, 17, 40, 90, 130, 131, 200};
  EXPECT_EQ(run_search(rows, 200, 120).kept_through(), 90);
  EXPECT_EQ(run_search(rows, 200, 130).kept_through(), 130);
  EXPECT_EQ(run_search(rows, 200, 2).kept_through(), 0);
  EXPECT_EQ(run_search(rows, 200, 500).kept_through(), 200);
}

TEST(KeptThroughSearch, EveryRestorePointAndUpperIsFoundExactly) {
  std::set<std::int64_t> rows{2, 3, 5, 8, 13, 21, 34, 55};
  for (std::int64_t upper = 0; upper <= 60; ++upper)
    for (std::int64_t restored = 0; restored <= 60; ++restored) {
      std::int64_t want = 0;
      for (auto r : rows)
        if (r <= restored && r <= upper) want = r;
      EXPECT_EQ(run_search(rows, upper, restored).kept_through(), want) << upper << " " << restored;
    }
}

TEST(KeptThroughSearch, NoRowsMeansNothingIsKeptAndNothingIsProbedForever) {
  auto search = run_search({}, 1000, 500);
  EXPECT_EQ(search.kept_through(), 0);
  EXPECT_LE(search.probes(), 11);
  EXPECT_FALSE(KeptThroughSearch(0).next());
}

TEST(KeptThroughSearch, CompactedRevisionsAreNotProvenUnlessAHeldOneLiesAbove) {
  std::set<std::int64_t> rows;
  for (std::int64_t r = 1; r <= 100; ++r) rows.insert(r);
  // Compacted at 30, restored at 60: 60 is proven, so the compaction below it does not matter.
  auto above = run_search(rows, 100, 60, 30);
  EXPECT_EQ(above.kept_through(), 60);
  EXPECT_FALSE(above.unproven());
  // Compacted at 70, restored at 60: nothing can be proven; everything is set apart.
  auto below = run_search(rows, 100, 60, 70);
  EXPECT_EQ(below.kept_through(), 0);
  EXPECT_TRUE(below.unproven());
  EXPECT_EQ(below.compacted_through(), 70);
}

}  // namespace
}  // namespace etcd_sync

namespace etcd_sync {
namespace {

mvccpb::KeyValue kv(const std::string& key, const std::string& value, std::int64_t mod, std::int64_t create,
                    std::int64_t version, std::int64_t lease = 0) {
  mvccpb::KeyValue out;
  out.set_key(key);
  out.set_value(value);
  out.set_mod_revision(mod);
  out.set_create_revision(create);
  out.set_version(version);
  out.set_lease(lease);
  return out;
}

TEST(HistoryHoldsPut, SameRevisionValueAndMetadata) {
  MirroredRow row{"/a", "v", 12, false, 10, 2, 0};
  auto same = kv("/a", "v", 12, 10, 2);
  EXPECT_TRUE(history_holds_put(row, &same));
  EXPECT_FALSE(history_holds_put(row, nullptr));
  auto other_value = kv("/a", "w", 12, 10, 2);
  EXPECT_FALSE(history_holds_put(row, &other_value));
  auto later = kv("/a", "v", 11, 10, 2);  // the key's last change before 12: the row's put is not there
  EXPECT_FALSE(history_holds_put(row, &later));
  auto other_version = kv("/a", "v", 12, 10, 3);
  EXPECT_FALSE(history_holds_put(row, &other_version));
  auto other_lease = kv("/a", "v", 12, 10, 2, 77);
  EXPECT_FALSE(history_holds_put(row, &other_lease));
}

TEST(HistoryHoldsPut, MetadataNotRecordedIsNotCompared) {
  MirroredRow row{"/a", "v", 12, false, std::nullopt, std::nullopt, std::nullopt};
  auto any = kv("/a", "v", 12, 3, 9, 5);
  EXPECT_TRUE(history_holds_put(row, &any));
}

TEST(HistoryHoldsDelete, TheKeyWasThereJustBeforeAndIsGoneAt) {
  auto before = kv("/a", "v", 15, 15, 1);
  EXPECT_TRUE(history_holds_delete(&before, nullptr));
  EXPECT_FALSE(history_holds_delete(nullptr, nullptr));  // never there: no delete happened
  auto still = kv("/a", "v", 15, 15, 1);
  EXPECT_FALSE(history_holds_delete(&before, &still));  // still there
}

}  // namespace
}  // namespace etcd_sync
