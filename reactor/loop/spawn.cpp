#include "reactor/loop/spawn.hpp"

#include "reactor/loop/logging.hpp"

#include <boost/asio/co_spawn.hpp>

#include <cstdlib>
#include <memory>

namespace etcd_sync {

namespace {

SpawnFailureHandler& failure_handler() {
  static SpawnFailureHandler handler;
  return handler;
}

std::string describe(std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

void on_end(const std::string& name, std::exception_ptr failure, const std::function<void()>& done) {
  if (failure) {
    log_error("coroutine failed", {{"coroutine", name}, {"error", describe(failure)}});
    if (!failure_handler()) std::abort();
    failure_handler()(name, failure);
  }
  if (done) done();
}

}  // namespace

void set_spawn_failure_handler(SpawnFailureHandler handler) { failure_handler() = std::move(handler); }

void spawn(asio::io_context& io, asio::awaitable<void> work, std::string name, std::function<void()> done) {
  asio::co_spawn(io, std::move(work),
                 [name = std::move(name), done = std::move(done)](std::exception_ptr failure) {
                   on_end(name, failure, done);
                 });
}

void spawn(asio::io_context& io, Gate& gate, asio::awaitable<void> work, std::string name,
           std::function<void()> done) {
  // The holder is shared because the completion handler must be copyable; it leaves the gate after
  // `done` has run.
  auto holder = std::make_shared<Gate::Holder>(gate.enter());
  spawn(io, std::move(work), std::move(name), [holder = std::move(holder), done = std::move(done)]() mutable {
    if (done) done();
    holder.reset();
  });
}

}  // namespace etcd_sync
