// Exponential backoff with jitter.

#include "reactor/loop/backoff.hpp"
#include "reactor/loop/logging.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, NominalDoublesUpToTheMaximum) {
  Backoff b(milliseconds(100), milliseconds(1000), 1);
  EXPECT_EQ(b.nominal(1), milliseconds(100));
  EXPECT_EQ(b.nominal(2), milliseconds(200));
  EXPECT_EQ(b.nominal(4), milliseconds(800));
  EXPECT_EQ(b.nominal(5), milliseconds(1000));
  EXPECT_EQ(b.nominal(60), milliseconds(1000));  // no overflow on long outages
  EXPECT_EQ(b.nominal(0), milliseconds(100));
}

TEST(Backoff, JitterStaysBetweenHalfAndFullNominal) {
  Backoff b(milliseconds(100), milliseconds(30000), 42);
  for (int attempt = 1; attempt < 12; ++attempt) {
    for (int i = 0; i < 50; ++i) {
      auto d = b.delay(attempt);
      EXPECT_GE(d, b.nominal(attempt) / 2);
      EXPECT_LE(d, b.nominal(attempt));
    }
  }
}

TEST(Backoff, SequencesCountAttemptsAndReset) {
  Backoff b(milliseconds(10), milliseconds(1000), 7);
  b.next();
  b.next();
  EXPECT_EQ(b.attempts(), 2);
  EXPECT_LE(b.next(), milliseconds(40));
  b.reset();
  EXPECT_EQ(b.attempts(), 0);
  EXPECT_LE(b.next(), milliseconds(10));
  b.set_limits(milliseconds(500), milliseconds(500));
  EXPECT_GE(b.next(), milliseconds(250));
}

TEST(Logging, JsonLinesCarryTimestampLevelMessageAndFields) {
  auto when = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  EXPECT_EQ(format_log_line(LogFormat::json, LogLevel::warn, "etcd_wal row failed",
                            {{"wal_id", 7}, {"key", "/a\"b"}}, when),
            R"({"ts":"2023-11-14T22:13:20.123Z","level":"warn","msg":"etcd_wal row failed","wal_id":7,"key":"/a\"b"})");
  EXPECT_EQ(format_log_line(LogFormat::text, LogLevel::info, "started", {{"prefix", "/"}, {"dry_run", false}}, when),
            "2023-11-14T22:13:20.123Z info  started prefix=/ dry_run=false");
}

}  // namespace
}  // namespace etcd_sync
