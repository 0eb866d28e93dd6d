// The mirror's latency as (b) mirror-latency measures it, shared with (g) pruning: puts started
// open-loop at fixed times, each with its commit time (the wall clock when etcd's answer arrives),
// and a deferred constraint trigger on `etcd` that records clock_timestamp() per revision at the
// mirror's COMMIT, i.e. when the row becomes visible. Both clocks are this machine's CLOCK_REALTIME.
#pragma once

#include "perf/bench_env.hpp"

#include <deque>
#include <functional>
#include <map>

namespace etcd_sync::bench {

/// One put of the paced load.
struct TimedPut {
  std::int64_t revision = 0;
  std::int64_t sent_us = 0;       ///< wall micros when sent
  std::int64_t committed_us = 0;  ///< wall micros when etcd's answer arrived
  double late_ms = 0;             ///< how far behind its schedule the generator started it
};

/// Open-loop puts at a fixed rate to `key_prefix` + (i % keys): a late put never delays the next.
struct PacedPuts {
  std::string key_prefix = "/bench/lat/";
  int keys = 1000;
  std::string value;
  std::size_t limit = 0;  ///< schedule at most this many puts
  bool stop = false;      ///< set while running: schedule no more
  std::deque<TimedPut> puts;  ///< in schedule order; a deque, so that puts in flight keep their place
  int running = 0;
  std::exception_ptr failure;
};

/// Schedules `state.limit` puts (or until state.stop) at `rate` per second, waits for the puts in
/// flight; rethrows the first failure.
asio::awaitable<void> pace_puts(Loop& loop, PacedPuts& state, double rate);

/// Waits until the mirror's checkpoint reaches `revision`; throws after `deadline`.
asio::awaitable<void> wait_checkpoint(PgConnection& pg, std::int64_t revision, std::chrono::seconds deadline);

/// Adds the side table `bench_seen` and its deferred constraint trigger on `etcd` in `schema`
/// ("public", or the [postgresql] schema of an instance) after `etcd-sync migrate`; rows inserted
/// before are not recorded.
void install_seen_trigger(testing::PgClient& db, const std::string& schema = "public");
/// <schema>.bench_seen: revision -> wall micros of the mirror's COMMIT.
std::map<std::int64_t, std::int64_t> read_seen(testing::PgClient& db, const std::string& schema = "public");

/// The figures of the puts `chosen` picks (all when empty).
struct MirrorLatency {
  std::size_t puts = 0;
  std::size_t missing = 0;     ///< revisions not in bench_seen
  double achieved_rate = 0;    ///< puts/s between the first and last send
  double sending_seconds = 0;
  Distribution visible_ms;     ///< put answered -> row visible
  Distribution from_send_ms;   ///< put sent -> row visible
  Distribution put_ms;         ///< etcd Put round trip
  Distribution late_ms;        ///< generator lateness vs schedule
};
MirrorLatency mirror_latency(const std::deque<TimedPut>& puts, const std::map<std::int64_t, std::int64_t>& seen,
                             const std::function<bool(const TimedPut&)>& chosen = {});
/// Prints the four distributions as detail lines.
void print_mirror_latency(const MirrorLatency& m);

}  // namespace etcd_sync::bench
