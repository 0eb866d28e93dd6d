// Durations as the configuration writes them (README, "Configuration": strings with a unit).

#include "reactor/config/durations.hpp"

#include <gtest/gtest.h>

#include <string>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

TEST(ParseDuration, AcceptsNumbersWithAUnit) {
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("5s"), 5000ms);
  EXPECT_EQ(parse_duration("1m"), 60000ms);
  EXPECT_EQ(parse_duration("1h"), 3600000ms);
  EXPECT_EQ(parse_duration("0s"), 0ms);
  EXPECT_EQ(parse_duration("0ms"), 0ms);
  EXPECT_EQ(parse_duration("10s"), 10000ms);
}

TEST(ParseDuration, AcceptsCompoundAndFractionalValues) {
  EXPECT_EQ(parse_duration("1m30s"), 90000ms);
  EXPECT_EQ(parse_duration("1h2m3s"), 3723000ms);
  EXPECT_EQ(parse_duration("1s500ms"), 1500ms);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration(".5s"), 500ms);
  EXPECT_EQ(parse_duration("0.5m"), 30000ms);
  EXPECT_EQ(parse_duration("1.25h"), 4500000ms);
  EXPECT_EQ(parse_duration("1.500s"), 1500ms);
  EXPECT_EQ(parse_duration("0.001s"), 1ms);
}

TEST(ParseDuration, RejectsMissingUnitsSignsAndGarbage) {
  for (const char* text :
       {"",    "5",     "0",    "1.5",   "1m30",   "-5s",          "+5s",  "-0s",   " 5s",
        "5s ", "5 s",   "s",    "ms",    ".s",     "5x",           "5sec", "5S",    "1d",
        "1ns", "100us", "1e3s", "1..5s", "1.5.5s", "five seconds", "5s,",  "1m-30s"}) {
    EXPECT_EQ(parse_duration(text), std::nullopt) << "accepted \"" << text << "\"";
  }
}

TEST(ParseDuration, RejectsValuesThatAreNotWholeMilliseconds) {
  EXPECT_EQ(parse_duration("1.5ms"), std::nullopt);
  EXPECT_EQ(parse_duration("0.0001s"), std::nullopt);
  EXPECT_EQ(parse_duration("0.0000001h"), std::nullopt);
}

TEST(ParseDuration, RejectsValuesTooLargeForMilliseconds) {
  EXPECT_EQ(parse_duration("99999999999999999999ms"), std::nullopt);
  EXPECT_EQ(parse_duration("10000000000000h"), std::nullopt);
  EXPECT_EQ(parse_duration("9223372036854775807ms"), milliseconds(9223372036854775807LL));
  EXPECT_EQ(parse_duration("9223372036854775807ms1ms"), std::nullopt);
}

TEST(FormatDuration, UsesTheLargestUnitsAndLeavesOutZeroParts) {
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(1ms), "1ms");
  EXPECT_EQ(format_duration(500ms), "500ms");
  EXPECT_EQ(format_duration(1000ms), "1s");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
  EXPECT_EQ(format_duration(1050ms), "1.05s");
  EXPECT_EQ(format_duration(1001ms), "1.001s");
  EXPECT_EQ(format_duration(120000ms), "2m");
  EXPECT_EQ(format_duration(90000ms), "1m30s");
  EXPECT_EQ(format_duration(3600000ms), "1h");
  EXPECT_EQ(format_duration(3723004ms), "1h2m3.004s");
  EXPECT_EQ(format_duration(3600500ms), "1h0.5s");
  EXPECT_EQ(format_duration(-1500ms), "-1.5s");
}

TEST(FormatDuration, RoundTripsThroughParseDuration) {
  for (long long ms : {0LL, 1LL, 999LL, 1000LL, 1001LL, 59999LL, 60000LL, 61001LL, 3599999LL,
                       3600000LL, 86400000LL, 123456789LL, 9223372036854775807LL}) {
    const std::string text = format_duration(milliseconds(ms));
    EXPECT_EQ(parse_duration(text), milliseconds(ms)) << text;
  }
}

}  // namespace
}  // namespace etcd_sync
