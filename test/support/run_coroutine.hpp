// Runs an adapter coroutine to completion inside a test, with a deadline, so a hang fails the test
// instead of the CI job. Header-only, test-side code.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <optional>

#include "adapters/errors.hpp"

namespace etcd_sync::testing {

/// Spawns `make()` on `io` and runs the loop until that coroutine finishes; rethrows its exception.
/// If it has not finished after `deadline`, records a test failure, calls `on_timeout` (which should
/// cancel whatever the coroutine waits on: PgConnection::close, EtcdClient::cancel_all, ...) and
/// gives it 5 s more to unwind. A coroutine that still has not finished then would outlive the
/// test's objects, so the process aborts rather than run into a dangling reference.
///
/// `make` is called here and stays alive (it is a parameter) until the coroutine is done, so a
/// lambda coroutine may capture the test's locals by reference.
template <class Make>
void run_coroutine(boost::asio::io_context& io, Make&& make, std::chrono::milliseconds deadline,
                   const std::function<void()>& on_timeout = {}) {
  using clock = std::chrono::steady_clock;
  bool done = false;
  std::exception_ptr failure;
  boost::asio::co_spawn(io, make(), [&](std::exception_ptr e) {
    done = true;
    failure = e;
  });
  const auto run_until = [&](clock::time_point until) {
    while (!done && clock::now() < until) {
      if (io.stopped()) io.restart();
      io.run_one_until(until);
    }
  };
  run_until(clock::now() + deadline);
  if (!done) {
    ADD_FAILURE() << "coroutine did not finish within " << deadline.count() << " ms";
    if (on_timeout) on_timeout();
    run_until(clock::now() + std::chrono::seconds(5));
    if (!done) {
      std::fprintf(stderr, "coroutine did not unwind after on_timeout(); aborting\n");
      std::abort();
    }
  }
  // Let handlers that the coroutine left behind (cancelled timers, finished gRPC tags) run now,
  // while the objects they refer to still exist.
  if (io.stopped()) io.restart();
  io.poll();
  if (failure) std::rethrow_exception(failure);
}

/// Runs `work` (and whatever it spawned) on `io` until the loop has nothing left, on this thread;
/// returns its result or rethrows its exception. No deadline: for helpers whose callers bound time
/// themselves (the blocking test client, the benchmarks).
template <class T>
T run_to_completion(boost::asio::io_context& io, boost::asio::awaitable<T> work) {
  std::optional<T> result;
  std::exception_ptr failure;
  boost::asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T value) {
    failure = e;
    if (!e) result = std::move(value);
  });
  io.restart();
  io.run();
  if (failure) std::rethrow_exception(failure);
  return std::move(*result);
}

inline void run_to_completion(boost::asio::io_context& io, boost::asio::awaitable<void> work) {
  std::exception_ptr failure;
  boost::asio::co_spawn(io, std::move(work), [&](std::exception_ptr e) { failure = e; });
  io.restart();
  io.run();
  if (failure) std::rethrow_exception(failure);
}

/// Awaits `op` and returns the SyncError it throws, or nullopt when it succeeds. (A catch block
/// may not contain co_await, so tests that expect a failure go through this.)
template <class T>
boost::asio::awaitable<std::optional<SyncError>> capture_error(boost::asio::awaitable<T> op) {
  try {
    co_await std::move(op);
  } catch (const SyncError& error) {
    co_return error;
  }
  co_return std::nullopt;
}

}  // namespace etcd_sync::testing
