// A throwaway etcd cluster of N members on free loopback ports, for tests that lose a member
// or the leader.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "test/support/etcd_server.hpp"

namespace etcd_sync::testing {

/// N members (`name`-0, `name`-1, ...) with their files under `parent_dir`, started together with
/// --initial-cluster naming all of them and --initial-cluster-state new. Raft timers suit loopback:
/// 100 ms heartbeat and 1 s election timeout (25/250 ms for a single member, which has no peer to
/// lose). Each member keeps its ports and data across stop/kill9/restart/start, so a member that
/// comes back rejoins as itself.
class EtcdCluster {
 public:
  explicit EtcdCluster(const std::filesystem::path& parent_dir, std::size_t members = 3,
                       std::string name = "etcd");
  /// Every member stops (SIGTERM, then SIGKILL).
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  /// Launches every member that is not running, then waits (up to 20 s each) until each answers
  /// `etcdctl endpoint health`; members are launched before any is awaited, since one alone has no
  /// quorum. On the first start a port taken meanwhile moves the whole cluster to fresh ports
  /// (3 attempts). Throws std::runtime_error with the failing members' log tails.
  void start();
  /// Stops every member (SIGTERM and wait).
  void stop();

  std::size_t size() const { return members_.size(); }
  /// The `index`th member: stop(), kill9(), restart() or start() it alone (same ports, same data).
  EtcdServer& member(std::size_t index) { return *members_.at(index); }
  /// "127.0.0.1:PORT" of every member's client listener, in member order.
  std::vector<std::string> endpoints() const;

  /// The index of the member that leads now: the running members that answer Maintenance.Status
  /// (`etcdctl endpoint status -w json`) all name the same leader, and it is one of them
  /// (`leader` == its own `header.member_id`). nullopt while there is no leader or they disagree
  /// (during an election).
  std::optional<std::size_t> leader_index();
  /// Waits until leader_index() names a leader and returns it; throws std::runtime_error after
  /// `deadline`.
  std::size_t wait_for_leader(std::chrono::milliseconds deadline);

  /// Moves etcd's leadership to member `index` (`etcdctl move-leader`, sent to the current
  /// leader) and waits (10 s) until the members agree on it. Throws std::runtime_error when they
  /// do not.
  void move_leader_to(std::size_t index);

  /// Runs etcdctl (API v3; server_programs.hpp finds it) against every member's endpoint and
  /// returns its stdout; throws std::runtime_error carrying stderr if it exits non-zero.
  std::string etcdctl(const std::vector<std::string>& args) const;

 private:
  /// Fresh ports for every member and the --initial-cluster that names them.
  void assign_ports();

  std::vector<std::unique_ptr<EtcdServer>> members_;
  int heartbeat_interval_ms_;
  int election_timeout_ms_;
  bool formed_ = false;  ///< the cluster has started once: its members' ports are final
};

}  // namespace etcd_sync::testing
