// Which rows a pruning pass deletes (reactor/history/prune_sql.hpp): the statements' shape and
// parameters. What they delete on real data is tested in test/integration/history_test.cpp.

#include "reactor/history/prune_sql.hpp"
#include "reactor/history/pruner.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

TEST(PruneSql, TheWindowWalksTheRevisionIndexUnderThePrefix) {
  auto s = window_end_statement("/app/", 1200, 2000);
  EXPECT_NE(s.sql.find("ORDER BY revision LIMIT"), std::string::npos);
  EXPECT_EQ(s.params[0].value, "/app/");
  EXPECT_EQ(s.params[1].value, "1200");
  EXPECT_EQ(s.params[2].value, "2000");
  EXPECT_TRUE(s.prepare);
}

TEST(PruneSql, DeletesNeverTouchAPendingBaseAndStayInTheWindow) {
  KeepRules rules{2, std::chrono::milliseconds(60000)};
  for (const auto& s : {prune_superseded_statement("", 10, 20, rules), prune_lone_tombstones_statement("", 10, 20, rules)}) {
    EXPECT_NE(s.sql.find("etcd_wal p WHERE p.status = 'pending'"), std::string::npos) << s.sql;
    EXPECT_NE(s.sql.find("e.revision > $2::bigint AND e.revision <= $3::bigint"), std::string::npos) << s.sql;
    EXPECT_EQ(s.params[1].value, "10");
    EXPECT_EQ(s.params[2].value, "20");
  }
  auto superseded = prune_superseded_statement("", 10, 20, rules);
  EXPECT_EQ(superseded.params[3].value, "2");
  EXPECT_EQ(superseded.params[4].value, "60000");
  EXPECT_NE(prune_lone_tombstones_statement("", 10, 20, rules).sql.find("e.tombstone"), std::string::npos);
}

TEST(PruneSql, OnlyNonZeroSettingsPrune) {
  EXPECT_FALSE(KeepRules{}.prunes());
  EXPECT_TRUE((KeepRules{1, {}}.prunes()));
  EXPECT_TRUE((KeepRules{0, std::chrono::milliseconds(1)}.prunes()));
}

TEST(Pruner, PassesComeEveryMinuteOrHalfOfKeepFor) {
  HistoryConfig history;
  EXPECT_EQ(Pruner::pass_interval(history), std::chrono::milliseconds(60000));
  history.keep_for = std::chrono::hours(24);
  EXPECT_EQ(Pruner::pass_interval(history), std::chrono::milliseconds(60000));
  history.keep_for = std::chrono::milliseconds(10000);
  EXPECT_EQ(Pruner::pass_interval(history), std::chrono::milliseconds(5000));
  history.keep_for = std::chrono::milliseconds(100);
  EXPECT_EQ(Pruner::pass_interval(history), std::chrono::milliseconds(1000));
}

}  // namespace
}  // namespace etcd_sync
