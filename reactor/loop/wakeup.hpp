#pragma once
// A one-thread condition for coroutines on the reactor: wait() suspends until notify() or a
// deadline. A notify() while nobody waits is remembered, so a check-then-wait never misses one.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

namespace etcd_sync {

namespace asio = boost::asio;

class Wakeup {
 public:
  explicit Wakeup(asio::io_context& io) : timer_(io) {}

  /// Wakes the waiter now, or makes its next wait() return at once.
  void notify() {
    pending_ = true;
    timer_.cancel();
  }

  /// Returns true when notified, false when `timeout` (milliseconds) passed first.
  asio::awaitable<bool> wait(std::chrono::milliseconds timeout) {
    co_return co_await wait_until(std::chrono::steady_clock::now() + timeout);
  }

  /// Returns true when notified, false when `deadline` passed first.
  asio::awaitable<bool> wait_until(std::chrono::steady_clock::time_point deadline) {
    if (pending_) {
      pending_ = false;
      co_return true;
    }
    timer_.expires_at(deadline);
    boost::system::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    bool notified = pending_;
    pending_ = false;
    co_return notified;
  }

  /// Waits until notified, however long that takes.
  asio::awaitable<void> wait() {
    for (;;) {
      bool notified = co_await wait_until(std::chrono::steady_clock::time_point::max());
      if (notified) break;
    }
  }

 private:
  asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace etcd_sync
