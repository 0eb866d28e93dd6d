#pragma once
// A gate (Seastar's idea): work enters it while it is open; close() stops new work from entering
// and completes once every piece of work inside has left. Shutdown and reload drain in-flight work
// through one of these instead of polling a counter.

#include "reactor/loop/wakeup.hpp"

#include <cassert>
#include <cstddef>
#include <optional>
#include <stdexcept>

namespace etcd_sync {

/// Thrown by Gate::enter() once the gate is closing.
class GateClosed : public std::runtime_error {
 public:
  GateClosed() : std::runtime_error("gate closed") {}
};

class Gate {
 public:
  /// Marks one piece of in-flight work; leaving the scope (or destroying the holder) lets it out.
  /// Must not outlive its Gate.
  class Holder {
   public:
    Holder(Holder&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Holder& operator=(Holder&& other) noexcept {
      if (this != &other) {
        release();
        gate_ = other.gate_;
        other.gate_ = nullptr;
      }
      return *this;
    }
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() { release(); }

   private:
    friend class Gate;
    explicit Holder(Gate* gate) : gate_(gate) {}
    void release() {
      if (gate_) gate_->leave();
      gate_ = nullptr;
    }
    Gate* gate_;
  };

  explicit Gate(asio::io_context& io) : drained_(io) {}
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() { assert(count_ == 0 && "a Gate is destroyed with work still inside"); }

  /// Lets one piece of work in. Throws GateClosed once close() was called.
  Holder enter() {
    if (closed_) throw GateClosed();
    ++count_;
    return Holder(this);
  }
  /// Like enter(), but nullopt instead of an exception when closed.
  std::optional<Holder> try_enter() {
    if (closed_) return std::nullopt;
    ++count_;
    return Holder(this);
  }

  bool closed() const { return closed_; }
  /// How many pieces of work are inside.
  std::size_t count() const { return count_; }

  /// Lets no more work in, then waits until every piece inside has left. Safe to call again, also
  /// while another close() is still waiting: every one of them ends when the last piece leaves.
  asio::awaitable<void> close() {
    closed_ = true;
    while (count_ > 0) co_await drained_.wait();
  }

 private:
  void leave() {
    assert(count_ > 0);
    if (--count_ == 0 && closed_) drained_.notify_all();
  }

  std::size_t count_ = 0;
  bool closed_ = false;
  Broadcast drained_;  ///< the last piece of work left a closed gate
};

}  // namespace etcd_sync
