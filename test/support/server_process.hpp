// The part every throwaway server shares: a child process on loopback ports chosen once, the
// launch / wait-until-ready / retry-on-a-port-clash loop, and stop, kill9 and restart.
//
// A server runs as a direct child of the test process with its data, socket and log files under
// one directory. The ports are chosen at the first start and kept, so restart() brings the same
// server back on the same ports with its data. Everything here blocks; it is test-side code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "test/support/process.hpp"

namespace etcd_sync::testing {

class ServerProcess {
 public:
  virtual ~ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  /// Launches the server and waits until it is ready; a no-op if it is running. While the server
  /// may still move (no data tied to its ports yet), a launch that fails because a port was taken
  /// meanwhile picks fresh ports and tries again (3 attempts in all). Throws std::runtime_error
  /// naming the server and carrying its log's tail when it does not come up.
  void start();
  /// Stops the server gracefully and waits; a no-op if it is not running.
  virtual void stop();
  /// SIGKILL and reap: an abrupt crash.
  virtual void kill9();
  /// stop() then start(): same ports, same data.
  void restart();
  bool is_running() { return process_.running(); }
  pid_t pid() const { return process_.pid(); }
  const std::filesystem::path& log_path() const { return log_path_; }

  /// A launch in flight: where its lines start in the log.
  struct PendingLaunch {
    std::uintmax_t log_offset = 0;
  };
  /// How a launch ended: ready, or not (then the child is stopped and `error` says why).
  struct LaunchOutcome {
    bool ready = false;
    bool port_clash = false;  ///< the server exited saying one of its ports was taken
    std::string error;        ///< names the server and carries its log's tail
  };
  /// start() in two halves without the retry, for a cluster whose members can only become ready
  /// together: launch() spawns without waiting (nullopt if already running); await_ready() then
  /// waits up to the server's ready deadline. The caller decides what a port clash means.
  std::optional<PendingLaunch> launch();
  LaunchOutcome await_ready(const PendingLaunch& launch);

 protected:
  /// How a kind of server is started and given up on.
  struct Policy {
    std::size_t port_count = 1;                ///< distinct loopback ports the server needs
    std::chrono::milliseconds ready_deadline;  ///< how long one launch may take to become ready
    std::string port_clash_text;               ///< what its log says when a port was taken
    int abandon_signal = SIGKILL;              ///< stops a launch that never became ready...
    std::chrono::milliseconds abandon_grace{0};  ///< ...then SIGKILL after this
  };
  ServerProcess(std::filesystem::path log_path, Policy policy);

  /// Once per start() before any launch (initdb, waiting out crashed backends). Returns whether
  /// the server may still move to other ports; the default: when none were chosen yet.
  virtual bool prepare_start() { return !ports_chosen(); }
  /// Before each launch, after the ports are chosen.
  virtual void before_launch() {}
  /// The command line of one launch.
  virtual SpawnSpec launch_spec() = 0;
  /// One readiness probe; false while the server is not serving yet.
  virtual bool probe_ready() = 0;
  /// The server and where it listens, for messages ("etcd on 127.0.0.1:2379").
  virtual std::string describe() const = 0;

  /// The `index`th port (0 before the first start).
  int port(std::size_t index) const { return ports_.at(index); }
  bool ports_chosen() const { return ports_.front() != 0; }
  /// Fixes the ports instead of picking free ones (a cluster member's peers must know them).
  void set_ports(const std::vector<int>& ports);

  ChildProcess process_;

 private:
  void choose_ports();
  PendingLaunch launch_attempt();

  std::filesystem::path log_path_;
  Policy policy_;
  std::vector<int> ports_;
};

}  // namespace etcd_sync::testing
