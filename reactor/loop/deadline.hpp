#pragma once
// The one timeout helper: races an operation against a timer. The operation is anything that can
// be ended from outside (close a socket, cancel a wait, TryCancel a gRPC call); the Deadline ends it
// when the time is up, and says afterwards whether it did.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace etcd_sync {

namespace asio = boost::asio;

class Deadline {
 public:
  /// Arms the timer: unless disarmed (or destroyed) first, `on_expiry` runs once on the reactor at
  /// `at`. `on_expiry` must not destroy this Deadline.
  Deadline(asio::io_context& io, std::chrono::steady_clock::time_point at, std::function<void()> on_expiry)
      : state_(std::make_shared<State>(io, std::move(on_expiry))) {
    state_->timer.expires_at(at);
    state_->timer.async_wait([state = state_](boost::system::error_code ec) {
      if (ec || !state->armed) return;
      state->armed = false;
      state->expired = true;
      state->on_expiry();
    });
  }
  /// Arms the timer `timeout` from now.
  Deadline(asio::io_context& io, std::chrono::milliseconds timeout, std::function<void()> on_expiry)
      : Deadline(io, std::chrono::steady_clock::now() + timeout, std::move(on_expiry)) {}
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  ~Deadline() { disarm(); }

  /// The operation finished in time: `on_expiry` will not run.
  void disarm() {
    state_->armed = false;
    state_->timer.cancel();
  }
  /// True once `on_expiry` has run.
  bool expired() const { return state_->expired; }

 private:
  // Shared with the timer's handler, which may run after this object is gone (it then does nothing).
  struct State {
    State(asio::io_context& io, std::function<void()> f) : timer(io), on_expiry(std::move(f)) {}
    asio::steady_timer timer;
    bool armed = true;
    bool expired = false;
    std::function<void()> on_expiry;
  };
  std::shared_ptr<State> state_;
};

}  // namespace etcd_sync
