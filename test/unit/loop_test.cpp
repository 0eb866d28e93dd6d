// The reactor's own tools (reactor/loop/): Wakeup, Broadcast, Gate, Deadline, spawn. They need an io_context
// but no servers.

#include "reactor/loop/deadline.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/spawn.hpp"
#include "reactor/loop/wakeup.hpp"

#include <boost/asio/co_spawn.hpp>
#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;

asio::awaitable<void> wait_for(Wakeup& wakeup, bool& woke) {
  co_await wakeup.wait();
  woke = true;
}

TEST(Wakeup, WaitWithoutTimeoutEndsOnNotify) {
  asio::io_context io;
  Wakeup wakeup(io);
  bool woke = false;
  spawn(io, wait_for(wakeup, woke), "waiter");
  io.poll();
  EXPECT_FALSE(woke);
  wakeup.notify();
  io.run_for(100ms);
  EXPECT_TRUE(woke);
}

TEST(Wakeup, ANotifyBeforeTheWaitIsRemembered) {
  asio::io_context io;
  Wakeup wakeup(io);
  bool woke = false;
  wakeup.notify();
  spawn(io, wait_for(wakeup, woke), "waiter");
  io.run_for(100ms);
  EXPECT_TRUE(woke);
}

asio::awaitable<void> wait_on(Broadcast& broadcast, int& woken) {
  co_await broadcast.wait();
  ++woken;
}

// Several waiters at once (a Wakeup's second waiter would cancel the first's wait): each stays
// asleep until notify_all(), which wakes them all; a deadline ends one wait alone.
TEST(Broadcast, NotifyAllWakesEveryWaiterAndADeadlineEndsOneWait) {
  asio::io_context io;
  Broadcast broadcast(io);
  int woken = 0;
  spawn(io, wait_on(broadcast, woken), "waiter 1");
  spawn(io, wait_on(broadcast, woken), "waiter 2");
  spawn(io, wait_on(broadcast, woken), "waiter 3");
  io.run_for(50ms);
  EXPECT_EQ(woken, 0);
  broadcast.notify_all();
  io.run_for(50ms);
  EXPECT_EQ(woken, 3);

  bool timed_out = false;
  auto timed = [&]() -> asio::awaitable<void> {
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    co_await broadcast.wait_until(deadline);
    timed_out = true;
  };
  spawn(io, wait_on(broadcast, woken), "waiter 4");
  spawn(io, timed(), "timed waiter");
  io.restart();
  io.run_for(100ms);
  EXPECT_TRUE(timed_out);
  EXPECT_EQ(woken, 3) << "the other waiter woke with the deadline";
  broadcast.notify_all();
  io.run_for(50ms);
  EXPECT_EQ(woken, 4);
}

asio::awaitable<void> hold(Gate::Holder holder, Wakeup& release) {
  co_await release.wait();
  (void)holder;
}

asio::awaitable<void> mark(bool& ran) {
  ran = true;
  co_return;
}

asio::awaitable<void> close_gate(Gate& gate, bool& closed) {
  co_await gate.close();
  closed = true;
}

TEST(Gate, CloseWaitsUntilEveryHolderHasLeftAndRefusesNewWork) {
  asio::io_context io;
  Gate gate(io);
  Wakeup release_a(io), release_b(io);
  spawn(io, hold(gate.enter(), release_a), "a");
  spawn(io, hold(gate.enter(), release_b), "b");
  EXPECT_EQ(gate.count(), 2u);
  bool closed = false;
  spawn(io, close_gate(gate, closed), "close");
  io.poll();
  EXPECT_FALSE(closed);
  EXPECT_TRUE(gate.closed());
  EXPECT_THROW(gate.enter(), GateClosed);
  EXPECT_FALSE(gate.try_enter().has_value());
  release_a.notify();
  io.poll();
  EXPECT_FALSE(closed) << "b is still inside";
  release_b.notify();
  io.run_for(100ms);
  EXPECT_TRUE(closed);
  EXPECT_EQ(gate.count(), 0u);
}

TEST(Gate, TwoClosesAtOnceBothEndWhenTheLastHolderLeaves) {
  asio::io_context io;
  Gate gate(io);
  Wakeup release(io);
  spawn(io, hold(gate.enter(), release), "held");
  bool first = false, second = false;
  spawn(io, close_gate(gate, first), "first close");
  spawn(io, close_gate(gate, second), "second close");
  io.run_for(20ms);
  EXPECT_FALSE(first);
  EXPECT_FALSE(second);
  release.notify();
  io.run_for(100ms);
  EXPECT_TRUE(first);
  EXPECT_TRUE(second);
  bool again = false;
  io.restart();  // the run above ended out of work, which stops the io_context
  spawn(io, close_gate(gate, again), "close after drained");
  io.run_for(100ms);
  EXPECT_TRUE(again);
}

TEST(Gate, ClosingAnEmptyGateIsImmediate) {
  asio::io_context io;
  Gate gate(io);
  bool closed = false;
  spawn(io, close_gate(gate, closed), "close");
  io.run_for(100ms);
  EXPECT_TRUE(closed);
}

TEST(Deadline, RunsItsActionOnceWhenTimeIsUp) {
  asio::io_context io;
  int fired = 0;
  Deadline deadline(io, 10ms, [&] { ++fired; });
  EXPECT_FALSE(deadline.expired());
  io.run_for(100ms);
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(deadline.expired());
}

TEST(Deadline, DisarmedOrDestroyedInTimeItDoesNothing) {
  asio::io_context io;
  int fired = 0;
  {
    Deadline deadline(io, 10ms, [&] { ++fired; });
  }
  Deadline disarmed(io, 10ms, [&] { ++fired; });
  disarmed.disarm();
  io.run_for(100ms);
  EXPECT_EQ(fired, 0);
  EXPECT_FALSE(disarmed.expired());
}

asio::awaitable<void> fail() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  throw std::runtime_error("boom");
}

TEST(Spawn, AnExceptionIsEscalatedWithTheCoroutinesName) {
  asio::io_context io;
  std::string failed;
  bool done = false;
  set_spawn_failure_handler([&](const std::string& name, std::exception_ptr) { failed = name; });
  spawn(io, fail(), "the failing one", [&] { done = true; });
  io.run_for(100ms);
  set_spawn_failure_handler({});
  EXPECT_TRUE(done);
  EXPECT_EQ(failed, "the failing one");
}

TEST(Spawn, InAGateTheGateWaitsForIt) {
  asio::io_context io;
  Gate gate(io);
  Wakeup release(io);
  bool closed = false;
  spawn(io, gate, hold(gate.enter(), release), "held");  // two holders: its own and the spawn's
  EXPECT_EQ(gate.count(), 2u);
  spawn(io, close_gate(gate, closed), "close");
  io.poll();
  EXPECT_FALSE(closed);
  // The work holds nothing of the gate itself: only spawn's own check can refuse it.
  bool late_ran = false;
  EXPECT_THROW(spawn(io, gate, mark(late_ran), "late"), GateClosed);
  EXPECT_EQ(gate.count(), 2u);
  release.notify();
  io.run_for(100ms);
  EXPECT_TRUE(closed);
  EXPECT_FALSE(late_ran);
}

}  // namespace
}  // namespace etcd_sync
