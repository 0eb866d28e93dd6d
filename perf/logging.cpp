// (j) What a log line costs on the reactor thread. etcd-sync's sink is spdlog's synchronous
// stdout sink, flushed after every line (a supervisor reads stdout line by line), so a line is
// formatted, written and flushed by the thread that runs everything else. Measured in this
// process with the service's own logging code: formatting alone, then whole lines into /dev/null
// and into a pipe drained by another thread (as systemd's journal drains a unit's stdout).

#include "perf/bench_env.hpp"
#include "reactor/loop/logging.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace etcd_sync::bench {

namespace {

constexpr int kLines = 100000;

/// A typical line: the mirror's batch line with four fields.
LogFields sample_fields(int i) {
  return {{"revision", 1000000 + i}, {"events", 100}, {"prefix", "/bench/"}, {"lag_revisions", i % 7}};
}

/// Microseconds per call of `body`, the median of five rounds of kLines calls.
template <class Body>
double micros_per_line(Body body) {
  std::vector<double> rounds;
  for (int round = 0; round < 5; ++round) {
    auto began = Clock::now();
    for (int i = 0; i < kLines; ++i) body(i);
    rounds.push_back(seconds_since(began) * 1e6 / kLines);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[2];
}

/// Runs `body` with file descriptor 1 pointing at `target` (stdout is restored after).
template <class Body>
double with_stdout_on(int target, Body body) {
  std::fflush(stdout);
  const int saved = dup(1);
  dup2(target, 1);
  const double result = body();
  std::fflush(stdout);
  dup2(saved, 1);
  close(saved);
  return result;
}

}  // namespace

Outcome run_logging(const BenchOptions&) {
  std::printf("== (j) logging: one JSON log line on the reactor thread, %d lines x 5 rounds ==\n", kLines);
  configure_logging(LogLevel::info, LogFormat::json);
  const auto now = std::chrono::system_clock::now();
  volatile std::size_t sink = 0;
  const double format_us = micros_per_line([&](int i) {
    sink = sink + format_log_line(LogFormat::json, LogLevel::info, "mirrored", sample_fields(i), now).size();
  });
  const double text_us = micros_per_line([&](int i) {
    sink = sink + format_log_line(LogFormat::text, LogLevel::info, "mirrored", sample_fields(i), now).size();
  });

  const int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  const double null_us = with_stdout_on(null_fd, [&] {
    return micros_per_line([&](int i) { log_info("mirrored", sample_fields(i)); });
  });
  close(null_fd);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::thread reader([fd = fds[0]] {
    char buffer[65536];
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
  });
  const double pipe_us = with_stdout_on(fds[1], [&] {
    return micros_per_line([&](int i) { log_info("mirrored", sample_fields(i)); });
  });
  close(fds[1]);
  reader.join();
  close(fds[0]);

  detail(format("format only: JSON %.2f us, text %.2f us per line", format_us, text_us));
  detail(format("whole line (format, spdlog, write, flush): into /dev/null %.2f us, into a drained pipe %.2f us", null_us,
                pipe_us));
  detail(format("sink and flush alone: %.2f us (/dev/null), %.2f us (pipe)", null_us - format_us, pipe_us - format_us));
  // The reference: at info etcd-sync writes a line per state change or outage, not per event; a
  // loud hour (an outage logged once, a reload, a takeover) is a few lines. 1000 lines/s would be
  // a line per mirrored event at (b)'s rate, the worst a debug level could come near.
  const double share_at_1000 = pipe_us * 1000 / 1e6 * 100;
  Outcome outcome{"logging", format("a JSON line costs %.1f us on the reactor (%.1f us of it formatting); 1000 lines/s would "
                                    "take %.2f%% of a core (reference: < 5%%, so a synchronous flushing sink is kept): %s",
                                    pipe_us, format_us, share_at_1000, share_at_1000 < 5 ? "met" : "MISSED"),
                  share_at_1000 < 5};
  return outcome;
}

}  // namespace etcd_sync::bench
