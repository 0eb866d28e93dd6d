#pragma once
// The one way to start a coroutine that runs on its own: an exception that escapes it is logged
// with the coroutine's name and escalated (the service then stops with exit code 4), never
// swallowed by a detached completion handler.

#include "reactor/loop/gate.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <functional>
#include <string>

namespace etcd_sync {

/// What happens after a spawned coroutine ended by an exception (it is logged first). The service
/// installs one that stops it with exit code 4 (runtime failure); the default aborts the process,
/// so a bug never goes unnoticed in a command or a test.
using SpawnFailureHandler = std::function<void(const std::string& name, std::exception_ptr failure)>;
/// Installs `handler` for every spawn() of this process; an empty handler restores the default.
void set_spawn_failure_handler(SpawnFailureHandler handler);

/// Starts `work` on `io`. `name` labels the log line ("outbox batch", "metrics connection") if it
/// throws. `done`, when given, runs after the coroutine ended either way (after escalation).
void spawn(asio::io_context& io, asio::awaitable<void> work, std::string name, std::function<void()> done = {});

/// Starts `work` inside `gate`: gate.close() waits until it has ended. Throws GateClosed (and does
/// not start `work`) when the gate is closing.
void spawn(asio::io_context& io, Gate& gate, asio::awaitable<void> work, std::string name,
           std::function<void()> done = {});

}  // namespace etcd_sync
