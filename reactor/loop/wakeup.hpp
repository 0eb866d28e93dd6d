#pragma once
// One-thread conditions for coroutines on the reactor. Wakeup: one waiter; wait() suspends until
// notify() or a deadline, and a notify() while nobody waits is remembered, so a check-then-wait
// never misses one. Broadcast: any number of waiters, all woken by notify_all().

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <set>

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

/// A condition any number of coroutines may wait on at once (a Wakeup serves one: a second
/// waiter's wait would cancel the first's, and the two would wake each other in turn). Nothing is
/// remembered: a waiter checks its condition, then waits, with no suspension in between, so on the
/// one thread no notify_all() falls between them.
class Broadcast {
 public:
  explicit Broadcast(asio::io_context& io) : io_(io) {}

  /// Ends every wait in progress.
  void notify_all() {
    for (auto* timer : waiters_) timer->cancel();
  }

  /// Suspends until notify_all() or `deadline`, whichever is first.
  asio::awaitable<void> wait_until(std::chrono::steady_clock::time_point deadline) {
    asio::steady_timer timer(io_, deadline);
    waiters_.insert(&timer);
    struct Leave {
      std::set<asio::steady_timer*>& waiters;
      asio::steady_timer* timer;
      ~Leave() { waiters.erase(timer); }
    } leave{waiters_, &timer};
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  /// Suspends until notify_all().
  asio::awaitable<void> wait() { co_await wait_until(std::chrono::steady_clock::time_point::max()); }

 private:
  asio::io_context& io_;
  std::set<asio::steady_timer*> waiters_;  ///< the timers of the waits in progress
};

}  // namespace etcd_sync
