#include "test/support/etcd_cluster.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "test/support/ports.hpp"
#include "test/support/server_programs.hpp"
#include "test/support/wait.hpp"

namespace etcd_sync::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

EtcdCluster::EtcdCluster(const fs::path& parent_dir, std::size_t members, std::string name)
    : heartbeat_interval_ms_(members == 1 ? 25 : 100), election_timeout_ms_(members == 1 ? 250 : 1000) {
  if (members == 0) throw std::invalid_argument("an etcd cluster needs at least one member");
  for (std::size_t i = 0; i < members; ++i)
    members_.push_back(std::make_unique<EtcdServer>(parent_dir, name + "-" + std::to_string(i)));
}

EtcdCluster::~EtcdCluster() = default;

void EtcdCluster::assign_ports() {
  std::vector<int> ports;
  while (ports.size() < 2 * members_.size()) {
    const int port = free_loopback_port();
    if (std::find(ports.begin(), ports.end(), port) == ports.end()) ports.push_back(port);
  }
  std::string initial_cluster;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!initial_cluster.empty()) initial_cluster += ',';
    initial_cluster += members_[i]->name() + "=http://127.0.0.1:" + std::to_string(ports[2 * i + 1]);
  }
  for (std::size_t i = 0; i < members_.size(); ++i) {
    members_[i]->join_cluster(EtcdMembership{.client_port = ports[2 * i],
                                             .peer_port = ports[2 * i + 1],
                                             .initial_cluster = initial_cluster,
                                             .heartbeat_interval_ms = heartbeat_interval_ms_,
                                             .election_timeout_ms = election_timeout_ms_});
  }
}

void EtcdCluster::start() {
  constexpr int attempts = 3;
  for (int attempt = 1;; ++attempt) {
    if (!formed_) assign_ports();
    std::vector<std::optional<ServerProcess::PendingLaunch>> launches;
    for (auto& member : members_) launches.push_back(member->launch());
    std::string errors;
    bool port_clash = false;
    for (std::size_t i = 0; i < members_.size(); ++i) {
      if (!launches[i]) continue;  // was running already
      const auto outcome = members_[i]->await_ready(*launches[i]);
      if (outcome.ready) continue;
      port_clash = port_clash || outcome.port_clash;
      errors += outcome.error + "\n";
    }
    if (errors.empty()) {
      formed_ = true;
      return;
    }
    if (!formed_ && port_clash && attempt < attempts) {
      // Every member's peer URL is in every other's --initial-cluster: all of them move.
      for (auto& member : members_) {
        member->kill9();
        fs::remove_all(member->data_dir());  // it names the old peer URLs
      }
      continue;
    }
    throw std::runtime_error(errors);
  }
}

void EtcdCluster::stop() {
  for (auto& member : members_) member->stop();
}

std::vector<std::string> EtcdCluster::endpoints() const {
  std::vector<std::string> out;
  for (const auto& member : members_) out.push_back(member->endpoint());
  return out;
}

std::optional<std::size_t> EtcdCluster::leader_index() {
  std::optional<std::uint64_t> leader;
  std::optional<std::size_t> leader_member;
  bool answered = false;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!members_[i]->is_running()) continue;
    std::uint64_t member_id = 0;
    std::uint64_t names = 0;
    try {
      // A later --command-timeout overrides etcdctl()'s default: a hung member must not stall us.
      const auto text = members_[i]->etcdctl({"endpoint", "status", "-w", "json", "--command-timeout=1s"});
      const auto status = nlohmann::json::parse(text).at(0).at("Status");
      member_id = status.at("header").at("member_id").get<std::uint64_t>();
      names = status.at("leader").get<std::uint64_t>();
    } catch (const std::exception&) {
      continue;  // down or not answering: it has no say
    }
    if (names == 0 || (leader && *leader != names)) return std::nullopt;  // no leader, or disagreement
    leader = names;
    answered = true;
    if (member_id == names) leader_member = i;
  }
  if (!answered) return std::nullopt;
  return leader_member;
}

std::size_t EtcdCluster::wait_for_leader(milliseconds deadline) {
  std::optional<std::size_t> leader;
  wait_until([&] { return (leader = leader_index()).has_value(); }, deadline, milliseconds(50));
  if (!leader) {
    std::string running;
    for (const auto& member : members_)
      running += " " + member->name() + (member->is_running() ? "=running" : "=stopped");
    throw std::runtime_error("etcd cluster has no leader after " + std::to_string(deadline.count()) +
                             " ms (members:" + running + ")");
  }
  return *leader;
}

void EtcdCluster::move_leader_to(std::size_t index) {
  const std::size_t current = wait_for_leader(std::chrono::seconds(10));
  if (current == index) return;
  const auto status = nlohmann::json::parse(member(index).etcdctl({"endpoint", "status", "-w", "json"}));
  std::ostringstream id;
  id << std::hex << status.at(0).at("Status").at("header").at("member_id").get<std::uint64_t>();
  member(current).etcdctl({"move-leader", id.str()});
  if (!wait_until([&] { return leader_index() == index; }, std::chrono::seconds(10), std::chrono::milliseconds(50)))
    throw std::runtime_error("etcd member " + std::to_string(index) + " did not take the leadership");
}

std::string EtcdCluster::etcdctl(const std::vector<std::string>& args) const {
  std::string all;
  for (const auto& endpoint : endpoints()) all += (all.empty() ? "" : ",") + ("http://" + endpoint);
  std::vector<std::string> full = {"--endpoints=" + all, "--dial-timeout=2s", "--command-timeout=10s"};
  full.insert(full.end(), args.begin(), args.end());
  const auto result = run_command(etcdctl_program(), full, {{"ETCDCTL_API", "3"}}, seconds(30));
  if (result.exit_code != 0 || result.timed_out) {
    throw std::runtime_error("etcdctl " + join_args(args) + " failed (exit " + std::to_string(result.exit_code) +
                             (result.timed_out ? ", timed out" : "") + "): " + result.stderr_text);
  }
  return result.stdout_text;
}

}  // namespace etcd_sync::testing
