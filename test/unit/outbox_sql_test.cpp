// The outbox's statements (reactor/outbox/outbox_sql.hpp): what does not need a server. What they
// do on real data is tested in test/integration/outbox_test.cpp.

#include "reactor/outbox/outbox_sql.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

TEST(OutboxSql, ExplainedRowsReadsTheTopPlanNodesEstimate) {
  EXPECT_EQ(explained_rows("Index Only Scan using etcd_wal_pending_idx on etcd_wal  (cost=0.29..4.30 rows=1 width=4)"), 1);
  EXPECT_EQ(explained_rows("Seq Scan on etcd_wal  (cost=0.00..18334.00 rows=200000 width=4)"), 200000);
  EXPECT_EQ(explained_rows("Result  (cost=0.00..0.01 rows=1 width=4)\n  ->  Seq Scan (rows=9)"), 1) << "the first node's";
  EXPECT_EQ(explained_rows("Seq Scan on etcd_wal"), std::nullopt);
  EXPECT_EQ(explained_rows("(cost=0.00..1.00 rows= width=4)"), std::nullopt);
  EXPECT_EQ(explained_rows(""), std::nullopt);
}

TEST(OutboxSql, UpdatesFindTheirRowsByIdNotThroughThePendingIndexes) {
  // The partial indexes' predicate is status = 'pending': an UPDATE that names it lets the planner,
  // believing those indexes nearly empty after a large INSERT, scan them whole.
  for (const auto& sql : {claim_statement(10, {}, 0, 5, 7).sql, outcome_update_statement({}).sql}) {
    const auto update = sql.find("UPDATE etcd_wal");
    ASSERT_NE(update, std::string::npos) << sql;
    const auto where = sql.find("WHERE", sql.find(" FROM ", update));
    ASSERT_NE(where, std::string::npos) << sql;
    const auto end = sql.find("RETURNING", where);
    const auto condition = sql.substr(where, end - where);
    EXPECT_EQ(condition.find("status = 'pending'"), std::string::npos) << condition;
    EXPECT_NE(condition.find("status NOT IN ('success', 'conflict', 'failed')"), std::string::npos) << condition;
  }
}

}  // namespace
}  // namespace etcd_sync
