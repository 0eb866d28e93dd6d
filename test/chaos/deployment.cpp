#include "test/chaos/deployment.hpp"

#include <fstream>
#include <stdexcept>

namespace etcd_sync::chaos {

using std::chrono::seconds;

namespace {
constexpr const char* database = "chaos";
}

const char* to_string(ConflictMode mode) {
  return mode == ConflictMode::etcd_wins ? "etcd_wins" : "postgres_wins";
}

Deployment::Deployment(DeploymentSettings settings, ChaosLog& log)
    : etcd(dir.path(), settings.etcd_members),
      postgres(dir.path()),
      settings_(std::move(settings)),
      log_(log),
      config_path_(dir.path() / "etcd-sync.toml") {
  for (std::size_t i = 0; i < settings_.instances; ++i) {
    instances.push_back(std::make_unique<testing::ServiceProcess>(
        dir.path(), settings_.instances == 1 ? std::string("etcd-sync") : "etcd-sync-" + std::to_string(i)));
  }
}

Deployment::~Deployment() {
  for (auto& instance : instances) instance->kill9();
}

std::string Deployment::conninfo() const { return postgres.conninfo(database); }

void Deployment::write_config() {
  std::ofstream out(config_path_);
  out << "[postgresql]\ndsn = \"" << conninfo() << "\"\n\n[etcd]\nendpoints = [";
  const auto endpoints = etcd.endpoints();
  for (std::size_t i = 0; i < endpoints.size(); ++i) out << (i ? ", " : "") << '"' << endpoints[i] << '"';
  out << "]\nprefix = \"" << settings_.prefix << "\"\ndial_timeout = \"" << settings_.dial_timeout
      << "\"\nrequest_timeout = \"" << settings_.request_timeout << "\"\n\n"
      << "[sync]\ndirection = \"bidirectional\"\nconflict_resolution = \"" << to_string(settings_.mode) << "\"\n"
      << "batch_size = 100\nsync_interval = \"" << settings_.sync_interval << "\"\n\n"
      << "[sync.retry]\nmax_attempts = " << settings_.max_attempts << "\ninitial_backoff = \"" << settings_.initial_backoff
      << "\"\nmax_backoff = \"" << settings_.max_backoff << "\"\n\n"
      << "[ha]\nelection_prefix = \"" << settings_.election_prefix << "\"\n\n"
      << "[logging]\nlevel = \"" << settings_.log_level << "\"\nformat = \"json\"\n";
  if (!out) throw std::runtime_error("cannot write " + config_path_.string());
}

void Deployment::start() {
  etcd.start();
  postgres.start();
  postgres.create_database(database);
  write_config();
  log_.line("etcd (" + std::to_string(etcd.size()) + " members) and PostgreSQL (port " +
            std::to_string(postgres.port()) + ") up; config " + config_path_.string());
  for (std::size_t i = 0; i < instances.size(); ++i) {
    start_instance(i);
    auto& instance = *instances[i];
    if (!instance.wait_for_log("etcd-sync started", seconds(30)) ||
        !instance.wait_for_log("\"to\":\"watching\"", seconds(30))) {
      throw std::runtime_error("etcd-sync did not start; " + instance.log_path().string() + " ends with:\n" +
                               testing::last_lines(instance.log_text(), 40));
    }
  }
}

void Deployment::start_instance(std::size_t index) {
  instances.at(index)->start({"start", "-c", config_path_.string()});
}

void Deployment::ensure_servers_up() {
  etcd.start();
  postgres.start();
}

}  // namespace etcd_sync::chaos
