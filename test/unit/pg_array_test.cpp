// pg_array: the text-format array literal for text[] and bigint[] parameters.

#include "adapters/pg_connection.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

TEST(PgArray, QuotesEveryElementAndEscapesQuotesAndBackslashes) {
  EXPECT_EQ(pg_array({}), "{}");
  EXPECT_EQ(pg_array({std::string("a"), std::nullopt, std::string("")}), R"({"a",NULL,""})");
  EXPECT_EQ(pg_array({std::string(R"(say "hi" \o/)")}), R"({"say \"hi\" \\o/"})");
  EXPECT_EQ(pg_array({std::string("NULL"), std::string("{,}")}), R"({"NULL","{,}"})");
  EXPECT_EQ(pg_array({std::string("12"), std::string("-3")}), R"({"12","-3"})");
}

}  // namespace
}  // namespace etcd_sync
