#pragma once
// What the one-shot commands share: a coroutine run to completion on its own io_context, with
// SyncErrors mapped to the exit codes (README, "Commands").

#include "adapters/pg_connection.hpp"
#include "reactor/config/config.hpp"
#include "reactor/service/migrations.hpp"
#include "reactor/service/service.hpp"

#include <boost/asio/co_spawn.hpp>

#include <iostream>

namespace etcd_sync {

/// Runs `body` (a coroutine returning an exit code) on a fresh io_context; SyncErrors map to exit codes.
template <class Body>
int run_command(asio::io_context& io, Body body) {
  int code = exit_runtime;
  asio::co_spawn(io, body(), [&](std::exception_ptr failure, int result) {
    code = result;
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const SyncError& e) {
      std::cerr << "etcd-sync: " << e.what() << "\n";
      code = exit_code_for(e);
    } catch (const std::exception& e) {
      std::cerr << "etcd-sync: " << e.what() << "\n";
      code = exit_runtime;
    }
  });
  io.run();
  return code;
}


}  // namespace etcd_sync
