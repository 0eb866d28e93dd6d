#include "test/support/etcd_server.hpp"

#include <stdexcept>
#include <utility>

#include "test/support/netns.hpp"
#include "test/support/ports.hpp"
#include "test/support/server_programs.hpp"

namespace etcd_sync::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {


}  // namespace

EtcdServer::EtcdServer(const fs::path& parent_dir, std::string name)
    : ServerProcess(parent_dir / name / "etcd.log",
                    Policy{.port_count = 2,  // client, peer
                           .ready_deadline = seconds(20),
                           .port_clash_text = "address already in use",
                           .abandon_signal = SIGKILL,
                           .abandon_grace = milliseconds(0)}),
      name_(std::move(name)),
      dir_(parent_dir / name_),
      data_dir_(dir_ / "data") {
  fs::create_directories(dir_);
}

EtcdServer::~EtcdServer() {
  try {
    stop();
  } catch (...) {
    // ChildProcess's destructor still SIGKILLs and reaps.
  }
}

void EtcdServer::join_cluster(const EtcdMembership& membership) {
  membership_ = membership;
  set_ports({membership.client_port, membership.peer_port});
}

void EtcdServer::listen_on_all_addresses() {
  if (!in_private_network())
    throw std::logic_error("etcd " + name_ + ": listening on every address outside the test's private network namespace (" +
                           private_network_error() + ")");
  listen_on_all_ = true;
}

bool EtcdServer::prepare_start() {
  // A fresh member may retry on other ports if one was taken meanwhile; a member with data must
  // come back on its recorded peer URL, and a cluster member's peers know its ports.
  fresh_ = !fs::exists(data_dir_ / "member");
  return fresh_ && !membership_;
}

void EtcdServer::before_launch() {
  if (fresh_) fs::remove_all(data_dir_);  // leftovers of a launch that never became ready
}

SpawnSpec EtcdServer::launch_spec() {
  const std::string client = client_url();
  const std::string peer = peer_url();
  SpawnSpec spec;
  spec.program = etcd_program();
  spec.args = {"--name=" + name_,
               "--data-dir=" + data_dir_.string(),
               "--listen-client-urls=" + (listen_on_all_ ? listen_all_url() : client),
               "--advertise-client-urls=" + client,
               "--listen-peer-urls=" + peer,
               "--initial-advertise-peer-urls=" + peer,
               "--initial-cluster-state=new"};
  if (membership_) {
    spec.args.push_back("--initial-cluster=" + membership_->initial_cluster);
    spec.args.push_back("--heartbeat-interval=" + std::to_string(membership_->heartbeat_interval_ms));
    spec.args.push_back("--election-timeout=" + std::to_string(membership_->election_timeout_ms));
  } else {
    spec.args.push_back("--initial-cluster=" + name_ + "=" + peer);
    // A lone member has no peer to lose, so short raft timers are safe; they cut the election
    // after a restart from ~1.5 s to a few hundred ms.
    spec.args.push_back("--heartbeat-interval=25");
    spec.args.push_back("--election-timeout=250");
  }
  spec.args.insert(spec.args.end(), extra_arguments_.begin(), extra_arguments_.end());
  if (!tls_.empty()) {
    for (const auto& flag : {"--trusted-ca-file=" + tls_[0], "--cert-file=" + tls_[1], "--key-file=" + tls_[2],
                             std::string("--client-cert-auth")})
      spec.args.push_back(flag);
  }
  spec.output_path = log_path();
  spec.working_dir = dir_;
  spec.death_signal = SIGKILL;
  return spec;
}

bool EtcdServer::probe_ready() {
  if (!loopback_accepts(client_port())) return false;
  std::vector<std::string> args = etcdctl_tls_arguments();
  for (const auto& arg : {"--endpoints=" + client_url(), std::string("--dial-timeout=1s"),
                          std::string("--command-timeout=2s"), std::string("endpoint"), std::string("health")})
    args.push_back(arg);
  return run_command(etcdctl_program(), args, {{"ETCDCTL_API", "3"}}, seconds(5)).exit_code == 0;
}

std::string EtcdServer::describe() const { return "etcd on " + endpoint(); }

std::string EtcdServer::endpoint() const { return "127.0.0.1:" + std::to_string(port(0)); }

std::string EtcdServer::client_url() const { return (tls_.empty() ? "http://" : "https://") + endpoint(); }

std::string EtcdServer::listen_all_url() const {
  return (tls_.empty() ? "http://0.0.0.0:" : "https://0.0.0.0:") + std::to_string(port(0));
}

std::string EtcdServer::peer_url() const { return "http://127.0.0.1:" + std::to_string(port(1)); }

std::vector<std::string> EtcdServer::etcdctl_tls_arguments() const {
  if (tls_.empty()) return {};
  return {"--cacert=" + tls_[0], "--cert=" + tls_[3], "--key=" + tls_[4]};
}

void EtcdServer::restore_snapshot(const fs::path& snapshot, bool new_cluster_id) {
  if (is_running()) throw std::logic_error("restore_snapshot: stop " + name_ + " first");
  if (membership_) throw std::logic_error("restore_snapshot: " + name_ + " is a member of a larger cluster");
  const fs::path restored = dir_ / "restored";
  fs::remove_all(restored);
  std::vector<std::string> args{"snapshot", "restore", snapshot.string(), "--data-dir=" + restored.string(),
                                "--name=" + name_, "--initial-cluster=" + name_ + "=" + peer_url(),
                                "--initial-advertise-peer-urls=" + peer_url()};
  ++restores_;
  const std::string token = new_cluster_id ? "restored-" + std::to_string(restores_) : cluster_token_;
  args.push_back("--initial-cluster-token=" + token);
  const auto result = run_command(etcdctl_program(), args, {{"ETCDCTL_API", "3"}}, seconds(60));
  if (result.exit_code != 0 || result.timed_out)
    throw std::runtime_error("etcdctl " + join_args(args) + " failed (exit " + std::to_string(result.exit_code) +
                             "): " + result.stderr_text);
  int n = 1;
  while (fs::exists(dir_ / ("data.before-restore-" + std::to_string(n)))) ++n;
  fs::rename(data_dir_, dir_ / ("data.before-restore-" + std::to_string(n)));
  fs::rename(restored, data_dir_);
  cluster_token_ = token;
}

std::string EtcdServer::etcdctl(const std::vector<std::string>& args) const {
  std::vector<std::string> full = etcdctl_tls_arguments();
  for (const auto& flag : {"--endpoints=" + client_url(), std::string("--dial-timeout=2s"), std::string("--command-timeout=10s")})
    full.push_back(flag);
  full.insert(full.end(), args.begin(), args.end());
  const auto result = run_command(etcdctl_program(), full, {{"ETCDCTL_API", "3"}}, seconds(30));
  if (result.exit_code != 0 || result.timed_out) {
    throw std::runtime_error("etcdctl " + join_args(args) + " failed (exit " +
                             std::to_string(result.exit_code) +
                             (result.timed_out ? ", timed out" : "") + "): " +
                             result.stderr_text);
  }
  return result.stdout_text;
}

}  // namespace etcd_sync::testing
