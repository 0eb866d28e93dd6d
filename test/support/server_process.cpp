#include "test/support/server_process.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "test/support/files.hpp"
#include "test/support/ports.hpp"
#include "test/support/wait.hpp"

namespace etcd_sync::testing {

using std::chrono::milliseconds;

ServerProcess::ServerProcess(std::filesystem::path log_path, Policy policy)
    : log_path_(std::move(log_path)), policy_(std::move(policy)), ports_(policy_.port_count, 0) {}

void ServerProcess::set_ports(const std::vector<int>& ports) {
  if (ports.size() != ports_.size()) throw std::invalid_argument("set_ports: wrong number of ports");
  ports_ = ports;
}

void ServerProcess::choose_ports() {
  for (auto& port : ports_) {
    do {
      port = free_loopback_port();
    } while (std::count(ports_.begin(), ports_.end(), port) > 1);
  }
}

void ServerProcess::start() {
  if (is_running()) return;
  const bool may_move = prepare_start();
  constexpr int attempts = 3;
  for (int attempt = 1;; ++attempt) {
    const LaunchOutcome outcome = await_ready(launch_attempt());
    if (outcome.ready) return;
    if (may_move && outcome.port_clash && attempt < attempts) {
      std::fill(ports_.begin(), ports_.end(), 0);
      continue;
    }
    throw std::runtime_error(outcome.error);
  }
}

std::optional<ServerProcess::PendingLaunch> ServerProcess::launch() {
  if (is_running()) return std::nullopt;
  prepare_start();
  return launch_attempt();
}

ServerProcess::PendingLaunch ServerProcess::launch_attempt() {
  if (!ports_chosen()) choose_ports();
  const PendingLaunch pending{file_size_or_zero(log_path_)};
  before_launch();
  process_.start(launch_spec());
  return pending;
}

ServerProcess::LaunchOutcome ServerProcess::await_ready(const PendingLaunch& pending) {
  // Stop polling as soon as the child dies: the log says why.
  bool ready = false;
  wait_until([&] { return !process_.running() || (ready = probe_ready()); }, policy_.ready_deadline,
             milliseconds(25));
  if (ready) return {true, false, {}};

  const bool exited = !process_.running();
  process_.stop(policy_.abandon_signal, policy_.abandon_grace);
  const std::string log = read_text_file(log_path_, pending.log_offset);
  LaunchOutcome outcome;
  outcome.port_clash = exited && log.find(policy_.port_clash_text) != std::string::npos;
  outcome.error = describe() + " did not become ready (" + (exited ? "exited" : "timed out") + "); " +
                  log_path_.string() + " ends with:\n" + tail_of_file(log_path_);
  return outcome;
}

void ServerProcess::stop() { process_.stop(SIGTERM, std::chrono::seconds(10)); }

void ServerProcess::kill9() { process_.stop(SIGKILL, milliseconds(0)); }

void ServerProcess::restart() {
  stop();
  start();
}

}  // namespace etcd_sync::testing
