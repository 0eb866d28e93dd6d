// What one fault-suite run runs on: etcd (a cluster), PostgreSQL with the run's database, and
// --instances etcd-sync instances on the same database and prefix, each with its own
// configuration file that differs only in [ha] instance_id ("chaos-0", "chaos-1", ...) and its own
// log (etcd-sync-<i>.log). With isolated instances (the driver runs in its private network
// namespace, test/support/netns.hpp), each instance runs in an isolated host of its own and reaches
// the servers over its veth, so that network faults can cut one instance off.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/checker.hpp"
#include "test/support/netns.hpp"
#include "test/support/servers.hpp"
#include "test/support/service_process.hpp"

namespace etcd_sync::chaos {

/// The settings a run writes into etcd-sync's configuration.
struct DeploymentSettings {
  ConflictMode mode = ConflictMode::etcd_wins;
  std::size_t etcd_members = 3;
  std::size_t instances = 1;
  std::string prefix = "/chaos/";
  std::string election_prefix = "/etcd-sync/election/";  ///< [ha] election_prefix: campaign keys, the outbox's barrier and receipt
  int ha_ttl_seconds = 3;  ///< [ha] ttl: short, so that takeovers after a dead or frozen leader happen within a fault
  std::string log_level = "debug";
  std::string request_timeout = "2s";  ///< [etcd] and [postgresql] request_timeout: a silent peer is noticed within a fault
  std::string dial_timeout = "2s";
  std::string sync_interval = "1s";
  int max_attempts = 3;
  std::string initial_backoff = "100ms";
  std::string max_backoff = "1s";
  /// Each instance in an IsolatedHost of its own (servers on every address of the private network
  /// namespace); needs in_private_network().
  bool isolate_instances = false;
};

const char* to_string(ConflictMode mode);

class Deployment {
 public:
  /// Makes the temp dir and the servers' objects; nothing runs until start().
  Deployment(DeploymentSettings settings, ChaosLog& log);
  /// Everything stops (etcd-sync first, then the servers); the temp dir goes unless kept.
  ~Deployment();

  /// Starts etcd and PostgreSQL, creates the database, writes the configurations and starts every
  /// etcd-sync instance, one after the other: the first until it leads and its mirror watches,
  /// each other until it stands by. Throws std::runtime_error (with the log's end) when something
  /// does not come up.
  void start();

  /// Starts instance `index` without waiting (a restart after a fault). Throws if it cannot be
  /// exec'd.
  void start_instance(std::size_t index);
  /// Waits up to `deadline` until instance `index`, started last, has started and its elector
  /// leads or stands by (logged since its start). Returns false at the deadline or if it exited.
  bool wait_campaigned(std::size_t index, std::chrono::milliseconds deadline);
  /// Starts every server that is not running (after the faults, before settling).
  void ensure_servers_up();

  /// conninfo of the run's database.
  std::string conninfo() const;
  /// The etcd endpoints, as the configuration names them.
  std::vector<std::string> etcd_endpoints() const { return etcd.endpoints(); }
  const DeploymentSettings& settings() const { return settings_; }
  /// Instance `index`'s configuration file.
  std::filesystem::path config_path(std::size_t index) const;
  /// Instance `index`'s [ha] instance_id: "chaos-<index>".
  static std::string instance_id(std::size_t index) { return "chaos-" + std::to_string(index); }
  /// The index of the instance with `instance_id`, or nullopt when it is none of the run's.
  std::optional<std::size_t> index_of(const std::string& instance_id) const;
  /// "instance 1 (chaos-1, pid 1234)".
  std::string describe_instance(std::size_t index);
  /// <election_prefix>campaign/, where every instance's campaign key is.
  std::string campaign_prefix() const;
  /// Instance `index`'s isolated host, or nullptr when the instances are not isolated.
  testing::IsolatedHost* host(std::size_t index) { return hosts_.empty() ? nullptr : hosts_.at(index).get(); }
  /// The client ports of every etcd member, in member order (what a cut from etcd drops).
  std::vector<int> etcd_client_ports();

  /// Files of the run: server data and logs, etcd-sync's logs, the configuration, chaos.log.
  testing::TempDir dir;
  testing::EtcdCluster etcd;
  testing::PostgresServer postgres;
  std::vector<std::unique_ptr<testing::ServiceProcess>> instances;

 private:
  /// One per instance with isolate_instances, else none; made before the instances start and
  /// deleted after they are killed.
  std::vector<std::unique_ptr<testing::IsolatedHost>> hosts_;

  void write_config(std::size_t index);

  DeploymentSettings settings_;
  ChaosLog& log_;
};

}  // namespace etcd_sync::chaos
