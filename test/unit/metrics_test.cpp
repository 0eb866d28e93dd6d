// The /metrics body (reactor/service/metrics.hpp render_metrics) and the listen address parser.

#include "reactor/service/metrics.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

bool has_line(const std::string& body, const std::string& line) { return body.find(line + "\n") != std::string::npos; }

TEST(RenderMetrics, CountersGaugesAndConnectionHealth) {
  SyncStats stats;
  stats.puts_applied = 7;
  stats.deletes_applied = 2;
  stats.wal_success = 5;
  stats.wal_conflict = 1;
  stats.mirrored_revision = 90;
  stats.etcd_revision = 100;
  stats.etcd.seen = true;
  stats.postgresql.seen = true;
  stats.postgresql.failing = 1;  // one engine failing on PostgreSQL
  auto body = render_metrics(stats, "1.2.3");
  EXPECT_TRUE(has_line(body, "etcd_sync_build_info{version=\"1.2.3\"} 1"));
  EXPECT_TRUE(has_line(body, "etcd_sync_events_applied_total{op=\"put\"} 7"));
  EXPECT_TRUE(has_line(body, "etcd_sync_events_applied_total{op=\"delete\"} 2"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_outcomes_total{status=\"success\"} 5"));
  EXPECT_TRUE(has_line(body, "etcd_sync_lag_revisions 10"));
  EXPECT_TRUE(has_line(body, "etcd_sync_connection_up{peer=\"etcd\"} 1"));
  EXPECT_TRUE(has_line(body, "etcd_sync_connection_up{peer=\"postgresql\"} 0"));
  EXPECT_EQ(body.find("etcd_sync_wal_rows"), std::string::npos) << "not counted yet: not shown";
  stats.wal_rows_known = true;
  stats.wal_failed_rows = 3;
  body = render_metrics(stats, "1.2.3");
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_rows{status=\"failed\"} 3"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_rows{status=\"pending\"} 0"));
}

TEST(RenderMetrics, HistogramBucketsAreCumulative) {
  SyncStats stats;
  stats.wal_apply_seconds.observe(0.0004);
  stats.wal_apply_seconds.observe(0.003);
  stats.wal_apply_seconds.observe(7.0);
  auto body = render_metrics(stats, "x");
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_apply_seconds_bucket{le=\"0.0005\"} 1"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_apply_seconds_bucket{le=\"0.005\"} 2"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_apply_seconds_bucket{le=\"5\"} 2"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_apply_seconds_bucket{le=\"+Inf\"} 3"));
  EXPECT_TRUE(has_line(body, "etcd_sync_wal_apply_seconds_count 3"));
}

TEST(ParseListenAddress, HostPortForms) {
  EXPECT_EQ(parse_listen_address("127.0.0.1:9464")->port(), 9464);
  EXPECT_EQ(parse_listen_address("localhost:1")->address().to_string(), "127.0.0.1");
  EXPECT_TRUE(parse_listen_address("[::1]:9464")->address().is_v6());
  EXPECT_EQ(parse_listen_address(":9464")->address().to_string(), "0.0.0.0");
  EXPECT_FALSE(parse_listen_address("example.com:80").has_value()) << "no DNS on the reactor";
  EXPECT_FALSE(parse_listen_address("127.0.0.1:99999").has_value());
  EXPECT_FALSE(parse_listen_address("127.0.0.1").has_value());
}

}  // namespace
}  // namespace etcd_sync
