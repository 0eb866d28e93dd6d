// Network faults for tests: a private network namespace for the whole test process, and "isolated
// host" namespaces joined to it by a veth pair, whose traffic iptables rules cut or thin out.
//
//   root namespace (the machine's: never touched)
//   └ private namespace: the test process, its servers on 127.0.0.1 and 0.0.0.0, and one veth end
//     per isolated host, 10.213.<n>.1/30
//       └ isolated host etcd-sync-test-<pid>-<n>: the other veth end, 10.213.<n>.2/30, and the
//         process under test (run through `ip netns exec`), which reaches the servers at
//         10.213.<n>.1; iptables rules here drop its packets (DROP, never a reset: a silent peer)
//
// Every address and rule lives in a namespace the test made; the private namespace goes with the
// test process, an isolated host with its IsolatedHost object (and a host left behind by a crashed
// test is deleted by the next test's first IsolatedHost). Needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN), /usr/sbin/ip (iproute2) and /usr/sbin/iptables (Debian package `iptables`; with
// the `statistic` match). The kernel has no `tc netem`, so delay is not offered, only loss.
// Everything here blocks; it is test-side code.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "test/support/process.hpp"

namespace etcd_sync::testing {

/// Moves the calling process into a fresh network namespace of its own (unshare(CLONE_NEWNET))
/// with `lo` up, so that its servers, the processes it starts and the isolated hosts it makes stay
/// off the machine's network. Call it first thing in main(), before any thread or socket exists:
/// the namespace is per thread, and threads started earlier stay outside. Every child inherits it.
/// Returns true when the process is in its private namespace (a second call returns the first's
/// result and does nothing); false when it was refused (not root: EPERM), with the reason in
/// private_network_error(). The process then stays where it was, and callers skip network faults.
bool enter_private_network();

/// Whether enter_private_network() succeeded in this process.
bool in_private_network();

/// Why enter_private_network() failed ("unshare(CLONE_NEWNET): Operation not permitted (network
/// faults need root)"), or "not tried" before the first call; "" once it succeeded.
std::string private_network_error();

/// One isolated host: a named network namespace `etcd-sync-test-<pid>-<n>` joined to the private
/// namespace by a veth pair on 10.213.<n>.0/30 (n = 0, 1, ... per process, at most 256 alive
/// together). A process run inside (exec_prefix()) reaches servers listening on 0.0.0.0 in the
/// private namespace at server_address(), and cut(), lossy() and heal_all() drop its packets by
/// iptables rules inside the host's namespace, both ways. The destructor deletes the veth pair and
/// the namespace, so whatever runs inside should have exited by then (it would lose its network).
class IsolatedHost {
 public:
  /// Creates the namespace, the veth pair and the addresses, and brings the links (and `lo`
  /// inside) up. First deletes the hosts whose test process is dead (`ip netns list` shows them
  /// as etcd-sync-test-<pid>-<n>). Throws
  /// std::logic_error outside the private namespace (enter_private_network() not called or
  /// refused: the veth would land in the machine's namespace), std::runtime_error naming the failed
  /// `ip` command and its output otherwise (what was made is removed again).
  IsolatedHost();
  /// Deletes the veth pair and the namespace (errors ignored).
  ~IsolatedHost();
  IsolatedHost(const IsolatedHost&) = delete;
  IsolatedHost& operator=(const IsolatedHost&) = delete;

  /// "etcd-sync-test-<pid>-<n>": the namespace's name, as `ip netns` lists it.
  const std::string& name() const { return name_; }
  /// "10.213.<n>.1": where a process inside reaches the private namespace's servers.
  std::string server_address() const;
  /// "10.213.<n>.2": the host's own address, as the servers see its connections come from.
  std::string host_address() const;
  /// {"/usr/sbin/ip", "netns", "exec", name()}: put before an absolute program path and its
  /// arguments to run it inside. `ip netns exec` execs the program in its own place, so the pid is
  /// the program's and a parent-death signal set before the exec stays set.
  std::vector<std::string> exec_prefix() const;
  /// Runs `program` (an absolute path) inside the host to completion, as run_command() does.
  CommandResult run(const std::filesystem::path& program, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

  /// Drops every TCP packet from the host to `port` and from `port` to the host (established
  /// connections included): the server on that port goes silent, without a reset. Cutting a port
  /// already cut does nothing. Throws std::runtime_error when iptables fails.
  void cut(int port);
  /// Undoes cut(`port`); nothing when it is not cut. Throws std::runtime_error when iptables fails.
  void heal(int port);
  /// Drops every packet on the veth, both ways: the host is off the network (its `lo` still works).
  void cut_all();
  /// Drops `percent` (1-100) of the packets on the veth at random, each direction on its own;
  /// replaces an earlier lossy(). Throws std::invalid_argument outside 1-100.
  void lossy(int percent);
  /// Removes every rule cut(), cut_all() and lossy() added: the host is whole again.
  void heal_all();
  /// The ports cut() holds cut now.
  const std::set<int>& cut_ports() const { return cut_ports_; }
  /// Packets the host's DROP rules have dropped since it was made (iptables' counters; heal_all()
  /// keeps the count). Throws std::runtime_error when iptables fails.
  std::uint64_t dropped_packets();

 private:
  /// Runs `iptables -w ARGS` inside the host; throws std::runtime_error on failure.
  void iptables(const std::vector<std::string>& args);
  /// The DROP rules' packet counters now.
  std::uint64_t counted_drops();
  /// Removes the veth pair and the namespace, ignoring errors.
  void remove();

  int index_;  ///< n in 10.213.n.0/30
  std::string name_;
  std::string host_link_;      ///< veth end in the private namespace
  std::string instance_link_;  ///< veth end inside the host
  std::set<int> cut_ports_;
  bool all_cut_ = false;
  int loss_percent_ = 0;
  std::uint64_t dropped_before_ = 0;  ///< drops counted by rules heal_all() flushed
};

}  // namespace etcd_sync::testing
