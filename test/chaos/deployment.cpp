#include "test/chaos/deployment.hpp"

#include <fstream>
#include <stdexcept>
#include <thread>

#include "reactor/ha/campaign.hpp"

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
      log_(log) {
  for (std::size_t i = 0; i < settings_.instances; ++i)
    instances.push_back(std::make_unique<testing::ServiceProcess>(dir.path(), "etcd-sync-" + std::to_string(i)));
  if (settings_.isolate_instances) {
    for (std::size_t m = 0; m < etcd.size(); ++m) etcd.member(m).listen_on_all_addresses();
    postgres.listen_on_all_addresses();
    for (std::size_t i = 0; i < settings_.instances; ++i) {
      hosts_.push_back(std::make_unique<testing::IsolatedHost>());
      instances[i]->set_wrapper(hosts_[i]->exec_prefix());
    }
  }
}

Deployment::~Deployment() {
  // Before their hosts go, which would leave them without a network.
  for (auto& instance : instances) instance->kill9();
}

std::vector<int> Deployment::etcd_client_ports() {
  std::vector<int> ports;
  for (std::size_t m = 0; m < etcd.size(); ++m) ports.push_back(etcd.member(m).client_port());
  return ports;
}

std::string Deployment::conninfo() const { return postgres.conninfo(database); }

std::filesystem::path Deployment::config_path(std::size_t index) const {
  return dir.path() / ("etcd-sync-" + std::to_string(index) + ".toml");
}

std::optional<std::size_t> Deployment::index_of(const std::string& id) const {
  for (std::size_t i = 0; i < instances.size(); ++i)
    if (instance_id(i) == id) return i;
  return std::nullopt;
}

std::string Deployment::describe_instance(std::size_t index) {
  auto& instance = *instances.at(index);
  return "instance " + std::to_string(index) + " (" + instance_id(index) + ", pid " +
         (instance.running() ? std::to_string(instance.pid()) : std::string("none")) + ")";
}

std::string Deployment::campaign_prefix() const { return etcd_sync::campaign_prefix(settings_.election_prefix); }

void Deployment::write_config(std::size_t index) {
  const auto path = config_path(index);
  std::ofstream out(path);
  // An isolated instance reaches the servers at its host's server address, the driver at 127.0.0.1.
  const testing::IsolatedHost* isolated = host(index);
  std::string dsn = conninfo();
  auto endpoints = etcd.endpoints();
  if (isolated != nullptr) {
    const std::string address = isolated->server_address();
    dsn = "host=" + address + " port=" + std::to_string(postgres.port()) + " dbname=" + database + " user=postgres";
    endpoints.clear();
    for (const int port : etcd_client_ports()) endpoints.push_back(address + ":" + std::to_string(port));
  }
  out << "[postgresql]\ndsn = \"" << dsn << "\"\nrequest_timeout = \"" << settings_.request_timeout
      << "\"\n\n[etcd]\nendpoints = [";
  for (std::size_t i = 0; i < endpoints.size(); ++i) out << (i ? ", " : "") << '"' << endpoints[i] << '"';
  out << "]\nprefix = \"" << settings_.prefix << "\"\ndial_timeout = \"" << settings_.dial_timeout
      << "\"\nrequest_timeout = \"" << settings_.request_timeout << "\"\n\n"
      << "[sync]\ndirection = \"bidirectional\"\nconflict_resolution = \"" << to_string(settings_.mode) << "\"\n"
      << "batch_size = 20\nsync_interval = \"" << settings_.sync_interval << "\"\n\n"
      << "[sync.retry]\nmax_attempts = " << settings_.max_attempts << "\ninitial_backoff = \"" << settings_.initial_backoff
      << "\"\nmax_backoff = \"" << settings_.max_backoff << "\"\n\n"
      << "[ha]\nelection_prefix = \"" << settings_.election_prefix << "\"\nttl = \"" << settings_.ha_ttl_seconds
      << "s\"\ninstance_id = \"" << instance_id(index) << "\"\n\n"
      << "[logging]\nlevel = \"" << settings_.log_level << "\"\nformat = \"json\"\n";
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void Deployment::start() {
  etcd.start();
  postgres.start();
  postgres.create_database(database);
  {
    // Commit timestamps tell check F whether a row of a lower id committed after a higher one
    // (track_commit_timestamp takes effect at the server's start).
    testing::PgClient db(conninfo());
    db.exec("ALTER SYSTEM SET track_commit_timestamp = on");
  }
  postgres.restart();
  for (std::size_t i = 0; i < instances.size(); ++i) write_config(i);
  log_.line("etcd (" + std::to_string(etcd.size()) + " members) and PostgreSQL (port " +
            std::to_string(postgres.port()) + ") up; " + std::to_string(instances.size()) +
            " etcd-sync instance(s)" + (hosts_.empty() ? std::string() : " each in an isolated host (" + hosts_.front()->name() + " ...)") +
            ", [ha] ttl " + std::to_string(settings_.ha_ttl_seconds) + " s, configs " +
            config_path(0).string() + (instances.size() > 1 ? " ..." : ""));
  for (std::size_t i = 0; i < instances.size(); ++i) {
    start_instance(i);
    auto& instance = *instances[i];
    const bool up = i == 0 ? instance.wait_for_log("\"msg\":\"leading\"", seconds(30)) &&
                                 instance.wait_for_log("\"to\":\"watching\"", seconds(30))
                           : wait_campaigned(i, seconds(30));
    if (!up) {
      throw std::runtime_error(describe_instance(i) + " did not " + (i == 0 ? "lead" : "stand by") + "; " +
                               instance.log_path().string() + " ends with:\n" +
                               testing::last_lines(instance.log_text(), 40));
    }
    log_.line(describe_instance(i) + (i == 0 ? " leads" : " stands by"));
  }
}

void Deployment::start_instance(std::size_t index) {
  // The outages here leave backlogs of tens of events: copy those of 10 or more, one 20-event
  // transaction per run, so that COPY, its two connections and its ordered commits take the
  // faults too.
  instances.at(index)->start({"start", "-c", config_path(index).string()}, {{"ETCD_SYNC_TEST_COPY_BACKLOG", "10,20"}});
}

bool Deployment::wait_campaigned(std::size_t index, std::chrono::milliseconds deadline) {
  auto& instance = *instances.at(index);
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    const std::string text = instance.log_since_mark();
    if (text.find("etcd-sync started") != std::string::npos &&
        (text.find("\"to\":\"standby\"") != std::string::npos || text.find("\"msg\":\"leading\"") != std::string::npos))
      return true;
    if (!instance.running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void Deployment::ensure_servers_up() {
  etcd.start();
  postgres.start();
}

}  // namespace etcd_sync::chaos
