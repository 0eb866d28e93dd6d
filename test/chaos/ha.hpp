// Who leads, as the fault suite sees it from outside: etcd's campaign keys (the lowest
// create_revision leads), etcd_sync_leader (the epoch PostgreSQL lets write) and etcd_sync_service
// (each instance's role); a sampler of etcd_sync_leader during the run; and what each instance's
// log says it did (terms led, fenced writes, lost leases).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/checker.hpp"
#include "test/chaos/deployment.hpp"
#include "test/support/pg_client.hpp"

namespace etcd_sync::testing {
class EtcdLoop;
}

namespace etcd_sync::chaos {

/// A client of the run's etcd cluster (every endpoint, 2 s per call) for looks at the campaign keys.
std::unique_ptr<testing::EtcdLoop> ha_etcd_client(Deployment& deployment);

/// The campaign keys under <election_prefix>campaign/, by create_revision. Throws SyncError when
/// etcd does not answer.
std::vector<CampaignKey> campaign_keys(Deployment& deployment, testing::EtcdLoop& etcd);

/// Reads the campaign keys, etcd_sync_leader and etcd_sync_service. Never throws: what could not
/// be read is named in `error`.
HaSnapshot read_ha(Deployment& deployment, testing::EtcdLoop& etcd);

/// The instances running now, with their pids (for ha_unsettled).
std::vector<ExpectedInstance> expected_instances(Deployment& deployment);

/// The current leader as far as one look tells.
struct LeaderGuess {
  std::size_t index = 0;     ///< into deployment.instances
  std::int64_t epoch = 0;    ///< its campaign key's create_revision (0 when read from PostgreSQL without one)
  std::string key;           ///< its campaign key ("" when read from PostgreSQL)
  std::string source;        ///< "etcd" or "etcd_sync_service"
};
/// The owner of the lowest campaign key; when etcd does not answer, the instance whose fresh
/// etcd_sync_service row has role leader; nullopt when neither tells (or it is none of the run's).
std::optional<LeaderGuess> find_leader(Deployment& deployment, testing::EtcdLoop& etcd);

/// etcd_sync_leader's epoch, or nullopt when there is no row or PostgreSQL does not answer.
std::optional<std::int64_t> leader_epoch(Deployment& deployment);

/// Polls etcd_sync_leader every 100 ms on its own thread and keeps (and logs) each change of
/// epoch or instance_id.
class EpochSampler {
 public:
  EpochSampler(std::string conninfo, ChaosLog& log) : conninfo_(std::move(conninfo)), log_(log) {}
  ~EpochSampler() { stop(); }
  EpochSampler(const EpochSampler&) = delete;
  EpochSampler& operator=(const EpochSampler&) = delete;

  void start();
  /// Ends the thread (after one last sample) and joins.
  void stop();
  std::vector<EpochSample> samples() const;

 private:
  void run();
  void sample_once(testing::PgClient& db);

  std::string conninfo_;
  ChaosLog& log_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<EpochSample> samples_;
};

/// What one instance's log (JSON lines, every run of it) says it did.
struct InstanceLogFacts {
  std::vector<LeadRecord> leads;  ///< "leading", in log order
  int starts = 0;                 ///< "etcd-sync started"
  int fenced = 0;                 ///< "fenced: another instance leads..."
  int lease_lost = 0;             ///< "etcd lease lost"
  int demoted = 0;                ///< elector state changed to demoting
  int elected_not_leading = 0;    ///< "elected, but not leading" (PostgreSQL had a newer epoch, or did not answer)
  int errors = 0;                 ///< lines at level error
};
/// Parses `text` (an instance's log) for the facts above.
InstanceLogFacts read_instance_log(const std::string& instance_id, const std::string& text);
/// "chaos-1: 3 starts, led epochs 12 40 77, 1 fenced, 2 leases lost, 3 demotions".
std::string describe(const std::string& instance_id, const InstanceLogFacts& facts);

}  // namespace etcd_sync::chaos
