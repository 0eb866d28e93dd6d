// What each WatchResponse means to the mirror (reactor/mirror/watch_response.hpp).

#include "reactor/mirror/watch_response.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using Kind = WatchStep::Kind;

etcdserverpb::WatchResponse response(std::int64_t header_revision) {
  etcdserverpb::WatchResponse r;
  r.mutable_header()->set_revision(header_revision);
  return r;
}

TEST(ReadWatchResponse, EventsCreatedProgressAndStale) {
  auto created = response(10);
  created.set_created(true);
  EXPECT_EQ(read_watch_response(created, 5).kind, Kind::created);

  auto events = response(12);
  events.add_events()->mutable_kv()->set_mod_revision(12);
  EXPECT_EQ(read_watch_response(events, 5).kind, Kind::events);

  auto progress = read_watch_response(response(20), 12);
  EXPECT_EQ(progress.kind, Kind::progress);
  EXPECT_EQ(progress.revision, 20);
  EXPECT_EQ(read_watch_response(response(12), 12).kind, Kind::stale) << "no news at the checkpoint";
}

// etcd 3.5 answers a progress request with watch id -1 (one answer for every watch of the stream);
// a progress notification etcd sends on its own names the watch. The mirror keeps one watch per
// stream and reads a progress notification by its header alone, so all of them mean the same.
TEST(ReadWatchResponse, ProgressReadsTheSameWhateverTheWatchId) {
  for (const std::int64_t watch_id : {std::int64_t{0}, std::int64_t{7}, std::int64_t{-1}}) {
    auto r = response(40);
    r.set_watch_id(watch_id);
    const auto step = read_watch_response(r, 30);
    EXPECT_EQ(step.kind, Kind::progress) << "watch id " << watch_id;
    EXPECT_EQ(step.revision, 40) << "watch id " << watch_id;
  }
}

TEST(ReadWatchResponse, CompactionComesBeforeCancellation) {
  auto compacted = response(30);
  compacted.set_compact_revision(25);
  compacted.set_canceled(true);  // etcd sends both
  auto step = read_watch_response(compacted, 5);
  EXPECT_EQ(step.kind, Kind::compacted);
  EXPECT_EQ(step.revision, 25);

  auto cancelled = response(30);
  cancelled.set_canceled(true);
  cancelled.set_cancel_reason("etcdserver: no leader");
  step = read_watch_response(cancelled, 5);
  EXPECT_EQ(step.kind, Kind::cancelled);
  EXPECT_EQ(step.reason, "etcdserver: no leader");
}

TEST(ShouldRequestProgress, OnlyAQuietWatchWithNoWriteInFlightAsks) {
  EXPECT_TRUE(should_request_progress(5s, 5s, false));
  EXPECT_FALSE(should_request_progress(4999ms, 5s, false)) << "events arrived within the interval";
  EXPECT_FALSE(should_request_progress(10s, 5s, true)) << "one write at a time on the stream";
}

}  // namespace
}  // namespace etcd_sync
