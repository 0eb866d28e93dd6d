// What one fault-suite run runs on: etcd (a cluster), PostgreSQL with the run's database, the
// etcd-sync configuration, and the etcd-sync instances (one today; a vector so that high
// availability adds more without changing the faults or the settle step).
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/checker.hpp"
#include "test/support/servers.hpp"
#include "test/support/service_process.hpp"

namespace etcd_sync::chaos {

/// The settings a run writes into etcd-sync's configuration.
struct DeploymentSettings {
  ConflictMode mode = ConflictMode::etcd_wins;
  std::size_t etcd_members = 3;
  std::size_t instances = 1;
  std::string prefix = "/chaos/";
  std::string election_prefix = "/etcd-sync/election/";  ///< [ha] election_prefix: the outbox's barrier and receipt
  std::string log_level = "debug";
  std::string request_timeout = "2s";
  std::string dial_timeout = "2s";
  std::string sync_interval = "1s";
  int max_attempts = 3;
  std::string initial_backoff = "100ms";
  std::string max_backoff = "1s";
};

const char* to_string(ConflictMode mode);

class Deployment {
 public:
  /// Makes the temp dir and the servers' objects; nothing runs until start().
  Deployment(DeploymentSettings settings, ChaosLog& log);
  /// Everything stops (etcd-sync first, then the servers); the temp dir goes unless kept.
  ~Deployment();

  /// Starts etcd and PostgreSQL, creates the database, writes the configuration and starts every
  /// etcd-sync instance, waiting until each has started and its mirror watches. Throws
  /// std::runtime_error (with the log's end) when something does not come up.
  void start();

  /// Starts instance `index` without waiting (a restart after a fault). Throws if it cannot be
  /// exec'd.
  void start_instance(std::size_t index);
  /// Starts every server that is not running (after the faults, before settling).
  void ensure_servers_up();

  /// conninfo of the run's database.
  std::string conninfo() const;
  /// The etcd endpoints, as the configuration names them.
  std::vector<std::string> etcd_endpoints() const { return etcd.endpoints(); }
  const DeploymentSettings& settings() const { return settings_; }
  const std::filesystem::path& config_path() const { return config_path_; }

  /// Files of the run: server data and logs, etcd-sync's logs, the configuration, chaos.log.
  testing::TempDir dir;
  testing::EtcdCluster etcd;
  testing::PostgresServer postgres;
  std::vector<std::unique_ptr<testing::ServiceProcess>> instances;

 private:
  void write_config();

  DeploymentSettings settings_;
  ChaosLog& log_;
  std::filesystem::path config_path_;
};

}  // namespace etcd_sync::chaos
