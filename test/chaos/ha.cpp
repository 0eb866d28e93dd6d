#include "test/chaos/ha.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "adapters/errors.hpp"
#include "reactor/keys/keys.hpp"
#include "test/support/etcd_loop.hpp"
#include "test/support/pg_client.hpp"

namespace etcd_sync::chaos {

using std::chrono::milliseconds;

std::unique_ptr<testing::EtcdLoop> ha_etcd_client(Deployment& deployment) {
  return std::make_unique<testing::EtcdLoop>(deployment.etcd_endpoints(), std::chrono::seconds(2));
}

std::vector<CampaignKey> campaign_keys(Deployment& deployment, testing::EtcdLoop& etcd) {
  const std::string prefix = deployment.campaign_prefix();
  const auto range = prefix_range(prefix);
  etcdserverpb::RangeRequest request;
  request.set_key(range.key);
  request.set_range_end(range.range_end);
  request.set_keys_only(true);
  const auto response = etcd.run(etcd.etcd().range(request));
  std::vector<CampaignKey> keys;
  for (const auto& kv : response.kvs())
    keys.push_back({kv.key().substr(prefix.size()), kv.create_revision(), kv.lease()});
  std::sort(keys.begin(), keys.end(),
            [](const CampaignKey& a, const CampaignKey& b) { return a.create_revision < b.create_revision; });
  return keys;
}

HaSnapshot read_ha(Deployment& deployment, testing::EtcdLoop& etcd) {
  HaSnapshot snapshot;
  try {
    snapshot.keys = campaign_keys(deployment, etcd);
  } catch (const std::exception& e) {
    snapshot.error = std::string("etcd: ") + e.what();
  }
  try {
    testing::PgClient db(deployment.conninfo() + " connect_timeout=2");
    for (const auto& row : db.exec("SELECT epoch, instance_id FROM etcd_sync_leader")) {
      snapshot.leader_row = LeaderRow{std::stoll(*row[0]), *row[1]};
    }
    for (const auto& row : db.exec(
             "SELECT instance_id, state, coalesce(role, ''), coalesce(ha_state, ''), epoch, coalesce(pid, 0), "
             "extract(epoch FROM now() - heartbeat_at) FROM etcd_sync_service ORDER BY instance_id")) {
      InstanceRow r;
      r.instance_id = *row[0];
      r.state = row[1].value_or("");
      r.role = *row[2];
      r.ha_state = *row[3];
      if (row[4]) r.epoch = std::stoll(*row[4]);
      r.pid = std::stoll(*row[5]);
      if (row[6]) r.heartbeat_age_seconds = std::stod(*row[6]);
      snapshot.rows.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    snapshot.error += (snapshot.error.empty() ? "" : "; ") + std::string("PostgreSQL: ") + e.what();
  }
  return snapshot;
}

std::vector<ExpectedInstance> expected_instances(Deployment& deployment) {
  std::vector<ExpectedInstance> out;
  for (std::size_t i = 0; i < deployment.instances.size(); ++i) {
    auto& instance = *deployment.instances[i];
    out.push_back({Deployment::instance_id(i), instance.running() ? instance.pid() : 0});
  }
  return out;
}

std::optional<LeaderGuess> find_leader(Deployment& deployment, testing::EtcdLoop& etcd) {
  try {
    const auto keys = campaign_keys(deployment, etcd);
    if (keys.empty()) return std::nullopt;
    const auto index = deployment.index_of(keys.front().instance_id);
    if (!index) return std::nullopt;
    return LeaderGuess{*index, keys.front().create_revision, deployment.campaign_prefix() + keys.front().instance_id,
                       "etcd"};
  } catch (const SyncError&) {
  }
  try {
    testing::PgClient db(deployment.conninfo() + " connect_timeout=2");
    const auto rows = db.exec_params(
        "SELECT instance_id, coalesce(epoch, 0) FROM etcd_sync_service WHERE role = 'leader' AND state = 'running' "
        "AND heartbeat_at > now() - make_interval(secs => $1::float8) ORDER BY epoch DESC NULLS LAST LIMIT 1",
        {std::to_string(kFreshHeartbeatSeconds)});
    if (rows.empty()) return std::nullopt;
    const auto index = deployment.index_of(*rows[0][0]);
    if (!index) return std::nullopt;
    return LeaderGuess{*index, std::stoll(*rows[0][1]), "", "etcd_sync_service"};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<std::int64_t> leader_epoch(Deployment& deployment) {
  try {
    testing::PgClient db(deployment.conninfo() + " connect_timeout=2");
    const auto epoch = db.scalar("SELECT max(epoch) FROM etcd_sync_leader");
    if (!epoch) return std::nullopt;
    return std::stoll(*epoch);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// --- EpochSampler --------------------------------------------------------------------------------

void EpochSampler::start() { thread_ = std::thread([this] { run(); }); }

void EpochSampler::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

std::vector<EpochSample> EpochSampler::samples() const {
  std::lock_guard lock(mutex_);
  return samples_;
}

void EpochSampler::sample_once(testing::PgClient& db) {
  try {
    if (!db.connected()) db.connect(conninfo_ + " connect_timeout=1");
    const auto rows = db.exec("SELECT epoch, instance_id FROM etcd_sync_leader");
    if (rows.empty()) return;
    EpochSample sample{log_.elapsed(), std::stoll(*rows[0][0]), *rows[0][1]};
    std::lock_guard lock(mutex_);
    if (!samples_.empty() && samples_.back().epoch == sample.epoch && samples_.back().instance_id == sample.instance_id)
      return;
    log_.line("epoch row: epoch " + std::to_string(sample.epoch) + " of " + sample.instance_id +
              (samples_.empty() ? std::string() : " (was " + std::to_string(samples_.back().epoch) + ")"));
    samples_.push_back(std::move(sample));
  } catch (const testing::PgError&) {
    db = testing::PgClient();  // PostgreSQL is down or restarting: connect again next time
  }
}

void EpochSampler::run() {
  testing::PgClient db;
  while (!stopping_) {
    sample_once(db);
    std::this_thread::sleep_for(milliseconds(100));
  }
  sample_once(db);
}

// --- instance logs ---------------------------------------------------------------------------------

InstanceLogFacts read_instance_log(const std::string& instance_id, const std::string& text) {
  InstanceLogFacts facts;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line.front() != '{') continue;  // the test harness's start markers
    const auto json = nlohmann::json::parse(line, nullptr, false);
    if (json.is_discarded() || !json.is_object()) continue;
    const std::string msg = json.value("msg", "");
    const std::string level = json.value("level", "");
    if (level == "error") ++facts.errors;
    if (msg == "leading" && json.contains("epoch") && json["epoch"].is_number()) {
      facts.leads.push_back({instance_id, json["epoch"].get<std::int64_t>(), json.value("ts", "")});
    } else if (msg == "etcd-sync started") {
      ++facts.starts;
    } else if (msg.rfind("fenced:", 0) == 0) {
      ++facts.fenced;
    } else if (msg == "etcd lease lost") {
      ++facts.lease_lost;
    } else if (msg == "elected, but not leading") {
      ++facts.elected_not_leading;
    } else if (msg == "elector state changed" && json.value("to", "") == "demoting") {
      ++facts.demoted;
    }
  }
  return facts;
}

std::string describe(const std::string& instance_id, const InstanceLogFacts& facts) {
  std::ostringstream out;
  out << instance_id << ": " << facts.starts << " starts, led " << facts.leads.size() << " terms";
  if (!facts.leads.empty()) {
    out << " (epochs";
    for (const auto& lead : facts.leads) out << " " << lead.epoch;
    out << ")";
  }
  out << ", " << facts.demoted << " demotions, " << facts.fenced << " fenced writes, " << facts.lease_lost
      << " leases lost, " << facts.elected_not_leading << " elections not taken up (PostgreSQL refused the epoch or did not answer), " << facts.errors
      << " error lines";
  return out.str();
}

}  // namespace etcd_sync::chaos
