// A throwaway etcd member (server_programs.hpp finds the program) on two free loopback ports:
// alone, or one member of an EtcdCluster.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "test/support/server_process.hpp"

namespace etcd_sync::testing {

/// What a member of a multi-member cluster needs to know (EtcdCluster fills it in).
struct EtcdMembership {
  int client_port = 0;
  int peer_port = 0;
  std::string initial_cluster;  ///< every member's "name=http://127.0.0.1:peer_port", comma-separated
  int heartbeat_interval_ms = 100;
  int election_timeout_ms = 1000;
};

/// A single-member etcd cluster by default. The ports are chosen once, so restart() brings the
/// same member back on the same endpoint with its data. stop() is SIGTERM and a wait (SIGKILL after
/// 10 s); kill9() an abrupt crash whose written data survives (it is in the page cache).
class EtcdServer : public ServerProcess {
 public:
  /// Files go to `parent_dir`/`name` (data dir, etcd.log). Nothing starts until start().
  explicit EtcdServer(const std::filesystem::path& parent_dir, std::string name = "etcd");
  /// Stops the server (SIGTERM, then SIGKILL).
  ~EtcdServer() override;

  /// start() launches etcd and waits (up to 20 s) until `etcdctl endpoint health` succeeds; it
  /// throws with the log tail if it does not come up.

  /// Serves clients over TLS from the next start(): server certificate and key, and the CA that
  /// signs client certificates (client certificates are then required). etcdctl() uses
  /// `client_cert`/`client_key` to connect.
  void use_tls(const std::filesystem::path& ca, const std::filesystem::path& cert, const std::filesystem::path& key,
               const std::filesystem::path& client_cert, const std::filesystem::path& client_key) {
    tls_ = {ca.string(), cert.string(), key.string(), client_cert.string(), client_key.string()};
  }
  /// Extra etcd flags for the next start(), e.g. {"--auth-token-ttl=1"}.
  void add_arguments(const std::vector<std::string>& arguments) {
    extra_arguments_.insert(extra_arguments_.end(), arguments.begin(), arguments.end());
  }
  /// Makes this server a member of a multi-member cluster from the next start(): fixed ports (the
  /// peers know them, so they never move), the cluster's --initial-cluster and its raft timers.
  void join_cluster(const EtcdMembership& membership);
  /// Listens for clients on every address (0.0.0.0) from the next start(), so that a process in an
  /// isolated host (netns.hpp) reaches it at the host's server_address(); endpoint(), client_url()
  /// and the advertised URL stay on 127.0.0.1, the peer listener on loopback. Throws
  /// std::logic_error outside the test's private network namespace (enter_private_network()),
  /// where every address would be the machine's.
  void listen_on_all_addresses();

  /// "127.0.0.1:PORT" of the client listener (gRPC endpoint for the service's config).
  std::string endpoint() const;
  /// "http://127.0.0.1:PORT".
  std::string client_url() const;
  /// "http://127.0.0.1:PORT" of the peer listener.
  std::string peer_url() const;
  int client_port() const { return port(0); }
  const std::string& name() const { return name_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }

  /// Restores `snapshot` (a file `etcdctl snapshot save` wrote) as this member's data, as an
  /// operator restores a backup: `etcdctl snapshot restore` into a new directory that replaces the
  /// data dir (the old one is kept beside it, numbered). With `new_cluster_id`, the restore uses a
  /// cluster token of its own, so the cluster gets a new cluster id; without, it uses the token the
  /// member has now, which with this member's name and peer URL gives back the same cluster id.
  /// The member must be stopped (std::logic_error otherwise); a failed restore throws
  /// std::runtime_error with etcdctl's message. A lone member only.
  void restore_snapshot(const std::filesystem::path& snapshot, bool new_cluster_id);

  /// Runs etcdctl (API v3; server_programs.hpp finds it) against this server and returns its stdout; throws
  /// std::runtime_error carrying stderr if it exits non-zero.
  std::string etcdctl(const std::vector<std::string>& args) const;

 protected:
  bool prepare_start() override;
  void before_launch() override;
  SpawnSpec launch_spec() override;
  bool probe_ready() override;
  std::string describe() const override;

 private:
  std::vector<std::string> etcdctl_tls_arguments() const;
  std::string cluster_token_ = "etcd-cluster";  ///< etcd's default --initial-cluster-token
  int restores_ = 0;
  /// "http://0.0.0.0:PORT" of the client listener.
  std::string listen_all_url() const;

  std::string name_;
  std::vector<std::string> extra_arguments_;
  std::vector<std::string> tls_;  // ca, cert, key, client cert, client key; empty = plain HTTP
  std::filesystem::path dir_;
  std::filesystem::path data_dir_;
  std::optional<EtcdMembership> membership_;
  bool listen_on_all_ = false;  ///< clients on 0.0.0.0 (listen_on_all_addresses())
  bool fresh_ = false;  ///< no member data yet: the data dir is wiped before each launch
};

}  // namespace etcd_sync::testing
