// Several etcd-sync instances on one database and prefix, one leader (README "Several instances:
// one leader"), under continuous load on both sides: SIGTERM, kill -9 and SIGSTOP of the leader
// (also frozen by a failpoint right before an outbox Txn and a mirror COMMIT), the epoch row bumped
// by hand, the election key deleted, etcd's leader member stopped, a rolling restart, rows aimed at
// election_prefix. After each scenario: the `etcd` table is etcd's history exactly, every row is
// settled once and each success applied once, the epoch only grew, exactly one instance leads, and
// `validate` is clean.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <csignal>
#include <fstream>
#include <map>
#include <sstream>
#include <iostream>
#include <thread>

#include "test/support/etcd_cluster.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

/// Writers on both sides at a modest rate: etcd puts of unique values ("e-N") and etcd_wal puts of
/// unique values ("w-N"), on the same few keys. postgres_wins: every row is applied.
class Workload {
 public:
  Workload(std::vector<std::string> etcd_endpoints, std::string conninfo, std::string prefix)
      : endpoints_(std::move(etcd_endpoints)), conninfo_(std::move(conninfo)), prefix_(std::move(prefix)) {}
  ~Workload() { stop(); }

  void start() {
    running_ = true;
    etcd_thread_ = std::thread([this] {
      EtcdTestClient etcd(endpoints_);
      for (int i = 0; running_; ++i) {
        try {
          etcd.put(prefix_ + "k" + std::to_string(i % 7), "e-" + std::to_string(i));
        } catch (const std::exception&) {
          std::this_thread::sleep_for(50ms);  // a member down: the next put fails over
        }
        std::this_thread::sleep_for(20ms);
      }
    });
    pg_thread_ = std::thread([this] {
      for (int i = 0; running_; ++i) {
        try {
          if (!db_.connected()) db_.connect(conninfo_);
          db_.exec_params("INSERT INTO etcd_wal (key, value) VALUES ($1, $2)",
                          {prefix_ + "k" + std::to_string(i % 7), "w-" + std::to_string(i)});
          ++rows_;
        } catch (const std::exception&) {
          std::this_thread::sleep_for(50ms);
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  void stop() {
    running_ = false;
    if (etcd_thread_.joinable()) etcd_thread_.join();
    if (pg_thread_.joinable()) pg_thread_.join();
  }
  int rows() const { return rows_; }

 private:
  std::vector<std::string> endpoints_;
  std::string conninfo_;
  std::string prefix_;
  PgClient db_;
  std::atomic<bool> running_{false};
  std::atomic<int> rows_{0};
  std::thread etcd_thread_, pg_thread_;
};

std::string describe(const HistoryEntry& e) {
  return e.key + "@" + std::to_string(e.revision) + "=" + e.value.value_or("<deleted>");
}

/// Where two histories part, for a failure message.
std::string first_difference(const std::vector<HistoryEntry>& mirror, const std::vector<HistoryEntry>& history) {
  for (std::size_t i = 0; i < std::max(mirror.size(), history.size()); ++i) {
    if (i < mirror.size() && i < history.size() && mirror[i] == history[i]) continue;
    std::string out = "first difference at " + std::to_string(i) + ": mirror ";
    out += i < mirror.size() ? describe(mirror[i]) : std::string("<end>");
    out += ", etcd ";
    out += i < history.size() ? describe(history[i]) : std::string("<end>");
    return out;
  }
  return "none";
}

class HaTest : public SyncSuite {
 protected:
  void TearDown() override {
    if (load_) load_->stop();
    for (auto& instance : instances_)
      if (instance->running()) instance->kill9();
    instances_.clear();
  }

  /// Writes instance `i`'s config (its own instance_id, ttl) with `endpoints`.
  std::filesystem::path config_for(int i, const std::string& prefix, const std::string& ttl,
                                   const std::vector<std::string>& endpoints = {}) {
    auto s = settings_for(prefix);
    s.conflict_resolution = "postgres_wins";
    s.request_timeout = "2s";
    auto path = env_->write_config(s, "ha-" + std::to_string(i) + ".toml");
    std::ofstream out(path, std::ios::app);
    out << "\n[ha]\ninstance_id = \"node-" << i << "\"\nttl = \"" << ttl << "\"\n";
    out.close();
    if (!endpoints.empty()) {
      // Replace the single endpoint with the cluster's.
      std::ifstream in(path);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::string list;
      for (const auto& e : endpoints) list += (list.empty() ? "\"" : ", \"") + e + "\"";
      auto at = text.find("endpoints = [");
      auto end = text.find(']', at);
      text.replace(at, end - at + 1, "endpoints = [" + list + "]");
      std::ofstream rewritten(path);
      rewritten << text;
    }
    return path;
  }

  ServiceProcess& instance(int i) {
    while (static_cast<int>(instances_.size()) <= i)
      instances_.push_back(std::make_unique<ServiceProcess>(env_->dir.path(), "node-" + std::to_string(instances_.size())));
    return *instances_[i];
  }

  /// Starts instance `i` and waits until it has joined the election (as leader or standby).
  void start(int i, const std::filesystem::path& config, const std::map<std::string, std::string>& env = {}) {
    instance(i).start({"start", "-c", config.string()}, env);
    ASSERT_TRUE(instance(i).wait_for_log("\"component\":\"elector\",\"from\":\"campaigning\"", 20s))
        << instance(i).log_text();
  }

  /// The instance_id PostgreSQL records as leading, with its epoch (nullopt: none yet).
  std::optional<std::pair<std::string, std::int64_t>> leader() {
    try {
      auto rows = env_->db().exec("SELECT instance_id, epoch FROM etcd_sync_leader");
      if (rows.empty()) return std::nullopt;
      return std::pair(*rows[0][0], std::stoll(*rows[0][1]));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  /// Waits until `who` leads (a new epoch in PostgreSQL, and its heartbeat says leader).
  bool wait_leader(const std::string& who, std::chrono::milliseconds deadline = 20s) {
    return wait_until([&] {
      auto l = leader();
      if (!l || l->first != who) return false;
      epochs_.push_back(l->second);
      return env_->db().scalar("SELECT role FROM etcd_sync_service WHERE instance_id = '" + who + "'") == "leader";
    }, deadline);
  }
  /// Waits until `more` rows more than now have been applied (the load flows through the leader).
  void wait_applied(int more) {
    auto done = [&] { return std::stoi(*env_->db().scalar("SELECT count(*) FROM etcd_wal WHERE status = 'success'")); };
    const int target = done() + more;
    EXPECT_TRUE(wait_until([&] { return done() >= target; }, 20s)) << env_->wal_status_counts();
  }

  /// Two instances under `prefix` with `ttl`, node-0 leading and node-1 standing by, and the load
  /// flowing through the leader. Returns their configs.
  std::pair<std::filesystem::path, std::filesystem::path> two_instances_under_load(const std::string& prefix,
                                                                                   const std::string& ttl) {
    auto c0 = config_for(0, prefix, ttl), c1 = config_for(1, prefix, ttl);
    validate_config_ = c0;
    start(0, c0);
    EXPECT_TRUE(wait_leader("node-0"));
    start(1, c1);
    load_ = std::make_unique<Workload>(std::vector<std::string>{env_->etcd.endpoint()}, env_->conninfo(), prefix);
    load_->start();
    wait_applied(20);  // load flows before the fault
    return {c0, c1};
  }
  /// Lets the load flow a little more, stops it, and runs the checks.
  void finish_load(const std::string& prefix) {
    wait_applied(20);
    load_->stop();
    expect_consistent(prefix, *env_->client);
  }

  /// The checks every scenario ends with.
  void expect_consistent(const std::string& prefix, EtcdTestClient& etcd, int expected_leaders = 1) {
    ASSERT_TRUE(wait_until([&] { return env_->db().scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == "0"; }, 40s))
        << env_->wal_status_counts();
    auto now = etcd.revision();
    ASSERT_TRUE(env_->wait_mirrored(now, 30s, prefix)) << "checkpoint " << env_->checkpoint(prefix) << " < " << now;
    // The etcd table is etcd's history under the prefix, revision by revision.
    auto history = etcd.history(prefix, 1, now);
    auto mirror = env_->mirror_rows(prefix);
    // The events of one revision (one Txn) in the same order on both sides: by key.
    auto by_revision_and_key = [](const HistoryEntry& a, const HistoryEntry& b) {
      return std::tie(a.revision, a.key) < std::tie(b.revision, b.key);
    };
    std::sort(history.begin(), history.end(), by_revision_and_key);
    std::sort(mirror.begin(), mirror.end(), by_revision_and_key);
    EXPECT_TRUE(mirror == history) << "mirror " << mirror.size() << " rows, history " << history.size() << " events; "
                                   << first_difference(mirror, history);
    // Every row success (postgres_wins, all valid), each applied exactly once at its revision.
    EXPECT_EQ(env_->wal_status_counts().find("success:"), 0u) << env_->wal_status_counts();
    std::map<std::string, std::vector<std::int64_t>> written;  // value -> revisions
    for (const auto& event : history)
      if (event.value && event.value->rfind("w-", 0) == 0) written[*event.value].push_back(event.revision);
    int rows = 0;
    for (const auto& row : env_->db().exec("SELECT value, revision, status FROM etcd_wal")) {
      ++rows;
      ASSERT_EQ(*row[2], "success") << *row[0];
      const auto& revisions = written[*row[0]];
      ASSERT_EQ(revisions.size(), 1u) << *row[0] << " reached etcd " << revisions.size() << " times";
      EXPECT_EQ(std::to_string(revisions[0]), *row[1]) << *row[0];
    }
    EXPECT_EQ(written.size(), static_cast<std::size_t>(rows)) << "a value reached etcd without its row";
    // The epoch only grew.
    for (std::size_t i = 1; i < epochs_.size(); ++i) EXPECT_LE(epochs_[i - 1], epochs_[i]) << "epochs went back";
    // Exactly one live instance leads.
    EXPECT_TRUE(wait_until([&] {
      return env_->db().scalar("SELECT count(*) FROM etcd_sync_service WHERE role = 'leader' AND state <> 'stopped' "
                               "AND heartbeat_at > now() - interval '3 seconds'") == std::to_string(expected_leaders);
    }, 10s)) << *env_->db().scalar("SELECT string_agg(instance_id || ':' || coalesce(role, '-'), ',') FROM etcd_sync_service");
    // validate is clean.
    auto validate = run_binary({"validate", "-c", validate_config_.string()});
    EXPECT_EQ(validate.exit_code, 0) << validate.stdout_text << validate.stderr_text;
  }

  std::vector<std::unique_ptr<ServiceProcess>> instances_;
  std::unique_ptr<Workload> load_;
  std::vector<std::int64_t> epochs_;
  std::filesystem::path validate_config_;
};

// SIGTERM of the leader: it drains and revokes its lease; the standby leads within about a second.
TEST_F(HaTest, SigtermOfTheLeaderHandsOverAndLosesNothing) {
  const std::string prefix = "/ha-term/";
  two_instances_under_load(prefix, "10s");
  const auto sent = std::chrono::steady_clock::now();
  instance(0).signal(SIGTERM);
  ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
  const auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  std::cout << "[ takeover ] SIGTERM -> the standby's epoch in PostgreSQL: " << took << " s (ttl 10 s)\n";
  EXPECT_EQ(instance(0).wait_exit(10s), 0);
  finish_load(prefix);
  EXPECT_GT(load_->rows(), 20);
}

// kill -9 of the leader: the standby takes over when the lease expires; the killed one comes back
// as a standby.
TEST_F(HaTest, KillNineOfTheLeaderIsTakenOverAfterItsLeaseExpires) {
  const std::string prefix = "/ha-kill/";
  auto [c0, c1] = two_instances_under_load(prefix, "2s");
  instance(0).kill9();
  ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
  start(0, c0);
  EXPECT_TRUE(instance(0).wait_for_log("\"to\":\"standby\"", 10s)) << instance(0).log_text();
  finish_load(prefix);
}

// SIGSTOP of the leader for longer than ttl, then SIGCONT: the standby took over meanwhile; the
// old leader comes back, learns it lost (its lease, or a fenced write) and stands by, committing
// nothing of its own.
TEST_F(HaTest, ALeaderFrozenLongerThanTtlComesBackFencedAndStandsBy) {
  const std::string prefix = "/ha-stop/";
  two_instances_under_load(prefix, "2s");
  instance(0).signal(SIGSTOP);
  ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
  wait_applied(20);
  instance(0).mark_log();
  instance(0).signal(SIGCONT);
  EXPECT_TRUE(instance(0).wait_for_log("\"to\":\"standby\"", 15s)) << instance(0).log_since_mark();
  const auto back = instance(0).log_since_mark();
  EXPECT_TRUE(back.find("etcd lease lost") != std::string::npos || back.find("fenced") != std::string::npos) << back;
  finish_load(prefix);
}

// The same, deterministic: the leader freezes itself right before an outbox Txn (and, in a second
// round, right before a mirror COMMIT). The standby takes over and decides the row; the old leader,
// continued, has its Txn (or COMMIT) refused and stands by.
TEST_F(HaTest, ALeaderFrozenRightBeforeATxnOrACommitWritesNothingWhenItComesBack) {
  for (const char* failpoint : {"outbox.before_txn=stop", "mirror.before_commit=stop@2"}) {
    SCOPED_TRACE(failpoint);
    env_->fresh_database();
    epochs_.clear();
    instances_.clear();
    const std::string prefix = std::string("/ha-fp-") + (failpoint[0] == 'o' ? "outbox" : "mirror") + "/";
    auto c0 = config_for(0, prefix, "2s"), c1 = config_for(1, prefix, "2s");
    validate_config_ = c0;
    start(0, c0, {{"ETCD_SYNC_FAILPOINTS", failpoint}});
    ASSERT_TRUE(wait_leader("node-0"));
    start(1, c1);
    env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('" + prefix + "row', 'w-frozen')");
    env_->client->put(prefix + "k0", "e-frozen");
    ASSERT_TRUE(instance(0).wait_for_log("failpoint reached", 10s)) << instance(0).log_text();
    ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
    instance(0).mark_log();
    instance(0).signal(SIGCONT);
    EXPECT_TRUE(instance(0).wait_for_log("\"to\":\"standby\"", 15s)) << instance(0).log_since_mark();
    const auto back = instance(0).log_since_mark();
    EXPECT_TRUE(back.find("fenced") != std::string::npos || back.find("etcd lease lost") != std::string::npos) << back;
    Workload load({env_->etcd.endpoint()}, env_->conninfo(), prefix);
    load.start();
    wait_applied(20);
    load.stop();
    expect_consistent(prefix, *env_->client);
    for (auto& i : instances_) i->terminate();
  }
}

// Someone bumps the epoch row by hand: the leader's next write is fenced; it steps down and
// campaigns again with a fresh key, whose epoch is higher still; writing resumes.
TEST_F(HaTest, AnEpochBumpedByHandFencesTheLeaderUntilANewerOneLeads) {
  const std::string prefix = "/ha-bump/";
  two_instances_under_load(prefix, "2s");
  instance(0).mark_log();
  env_->db().exec("UPDATE etcd_sync_leader SET epoch = epoch + 1");
  EXPECT_TRUE(instance(0).wait_for_log("fenced", 10s)) << instance(0).log_since_mark();
  ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
  finish_load(prefix);
}

// The leader's election key deleted with etcdctl: it steps down; the standby leads. Then the
// standby's own key deleted: it campaigns again.
TEST_F(HaTest, TheElectionKeyDeletedByHandMakesTheLeaderStepDown) {
  const std::string prefix = "/ha-key/";
  two_instances_under_load(prefix, "2s");
  instance(0).mark_log();
  env_->etcd.etcdctl({"del", "/etcd-sync/election/campaign/node-0"});
  EXPECT_TRUE(instance(0).wait_for_log("was deleted", 10s)) << instance(0).log_since_mark();
  ASSERT_TRUE(wait_leader("node-1", 10s)) << instance(1).log_text();
  EXPECT_TRUE(instance(0).wait_for_log("\"to\":\"standby\"", 10s)) << instance(0).log_since_mark();
  // Now the standby's own key: it notices, and campaigns again (it would otherwise stand by out of
  // line, never to lead).
  const std::string standby_key = "/etcd-sync/election/campaign/node-0";
  ASSERT_TRUE(wait_until([&] { return env_->client->get(standby_key).has_value(); }, 10s));
  const auto before = env_->client->get(standby_key)->create_revision();
  instance(0).mark_log();
  env_->etcd.etcdctl({"del", standby_key});
  EXPECT_TRUE(instance(0).wait_for_log("was deleted while standing by", 10s)) << instance(0).log_since_mark();
  EXPECT_TRUE(wait_until([&] {
    auto kv = env_->client->get(standby_key);
    return kv && kv->create_revision() > before;
  }, 10s)) << "the standby did not campaign again\n" << instance(0).log_since_mark();
  EXPECT_TRUE(instance(0).wait_for_log("\"to\":\"standby\"", 10s)) << instance(0).log_since_mark();
  finish_load(prefix);
}

// A rolling restart of two instances: stop one, start it, then the other. Always a leader soon.
TEST_F(HaTest, ARollingRestartOfTwoInstancesLosesNothing) {
  const std::string prefix = "/ha-roll/";
  auto [c0, c1] = two_instances_under_load(prefix, "3s");
  EXPECT_EQ(instance(1).terminate(), 0);  // the standby first
  start(1, c1);
  wait_applied(10);
  EXPECT_EQ(instance(0).terminate(), 0);  // then the leader: node-1 takes over
  ASSERT_TRUE(wait_leader("node-1", 10s));
  start(0, c0);
  finish_load(prefix);
}

// Three instances on a 3-member etcd: the etcd leader member is stopped under load; etcd elects a
// new one and etcd-sync goes on (whichever instance leads), losing and repeating nothing.
TEST_F(HaTest, ThreeInstancesCarryOnWhenEtcdsLeaderMemberStops) {
  EtcdCluster cluster(env_->dir.path(), 3, "ha-etcd");
  cluster.start();
  const std::string prefix = "/ha-cluster/";
  std::vector<std::filesystem::path> configs;
  for (int i = 0; i < 3; ++i) configs.push_back(config_for(i, prefix, "3s", cluster.endpoints()));
  validate_config_ = configs[0];
  for (int i = 0; i < 3; ++i) start(i, configs[i]);
  ASSERT_TRUE(wait_until([&] { return leader().has_value(); }, 20s));
  Workload load(cluster.endpoints(), env_->conninfo(), prefix);
  load.start();
  wait_applied(20);
  const auto etcd_leader = cluster.wait_for_leader(10s);
  cluster.member(etcd_leader).stop();
  cluster.wait_for_leader(10s);
  wait_applied(30);
  cluster.member(etcd_leader).start();
  wait_applied(20);
  load.stop();
  EtcdTestClient etcd(cluster.endpoints());
  expect_consistent(prefix, etcd);
}

// The leader's lease across etcd leader changes (each etcd version renews leases its own way when
// its raft leader moves: a new leader extends every lease, and 3.5 may also checkpoint the remaining
// TTL): node-0 leads on a 3-member etcd with ttl 3s while etcd's leadership moves to each member in
// turn. After each move, for two ttl's, the lease that holds node-0's campaign key stays alive with
// a remaining TTL from 1 s to the granted 3 s (etcdctl lease timetolive), node-0 keeps the same
// epoch and never logs a lost lease, and the load flows.
TEST_F(HaTest, TheLeadersLeaseKeepsItsTtlAcrossEtcdLeaderChanges) {
  EtcdCluster cluster(env_->dir.path(), 3, "ha-lease-etcd");
  cluster.start();
  const std::string prefix = "/ha-lease/";
  auto c0 = config_for(0, prefix, "3s", cluster.endpoints());
  auto c1 = config_for(1, prefix, "3s", cluster.endpoints());
  validate_config_ = c0;
  start(0, c0);
  ASSERT_TRUE(wait_leader("node-0"));
  start(1, c1);
  const auto epoch = leader()->second;
  Workload load(cluster.endpoints(), env_->conninfo(), prefix);
  load.start();
  wait_applied(20);

  const auto key = nlohmann::json::parse(
      cluster.etcdctl({"get", "/etcd-sync/election/campaign/node-0", "-w", "json"}));
  ASSERT_EQ(key.at("kvs").size(), 1u) << key.dump();
  const auto lease = key.at("kvs").at(0).at("lease").get<std::int64_t>();
  std::ostringstream lease_hex;
  lease_hex << std::hex << lease;
  int lowest_ttl = 3, moves = 0;
  for (std::size_t round = 0; round < cluster.size() + 1; ++round) {
    const std::size_t target = (cluster.wait_for_leader(10s) + 1) % cluster.size();
    cluster.move_leader_to(target);
    ++moves;
    const auto until = std::chrono::steady_clock::now() + 6s;
    while (std::chrono::steady_clock::now() < until) {
      const auto ttl = nlohmann::json::parse(cluster.etcdctl({"lease", "timetolive", lease_hex.str(), "-w", "json"}));
      const auto remaining = ttl.at("ttl").get<std::int64_t>();
      ASSERT_GE(remaining, 1) << "the lease ran out after etcd's leader moved to member " << target << ": "
                              << ttl.dump() << "\n" << instance(0).log_since_mark();
      ASSERT_LE(remaining, ttl.at("granted-ttl").get<std::int64_t>()) << ttl.dump();
      lowest_ttl = std::min<int>(lowest_ttl, static_cast<int>(remaining));
      std::this_thread::sleep_for(250ms);  // a sampling period, not a wait for a condition
    }
    ASSERT_EQ(leader()->first, "node-0");
    ASSERT_EQ(leader()->second, epoch) << "a new term began after etcd's leader moved to member " << target;
  }
  std::cout << "lease " << lease_hex.str() << ": " << moves << " etcd leader moves, lowest remaining TTL "
            << lowest_ttl << " s of 3 s\n";
  // This run's log only: node-0's log file holds the earlier tests' runs too.
  const std::string log = instance(0).log_since_mark();
  EXPECT_EQ(log.find("etcd lease lost"), std::string::npos) << log;
  wait_applied(20);
  load.stop();
  EtcdTestClient etcd(cluster.endpoints());
  expect_consistent(prefix, etcd);
}

// etcd_wal rows aimed at election_prefix fail with a clear message; with prefix "/" the election's
// own keys are never mirrored.
TEST_F(HaTest, RowsAimedAtTheElectionPrefixFailAndItsKeysAreNeverMirrored) {
  auto c0 = config_for(0, "/", "3s");
  start(0, c0);
  ASSERT_TRUE(wait_leader("node-0"));
  auto id = env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('/etcd-sync/election/campaign/node-0', 'x') RETURNING id")
                .at(0).at(0);
  ASSERT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal WHERE id = " + *id) != "pending"; }, 10s));
  EXPECT_EQ(env_->db().scalar("SELECT status FROM etcd_wal WHERE id = " + *id), "failed");
  EXPECT_NE(env_->db().scalar("SELECT error_message FROM etcd_wal WHERE id = " + *id).value_or("").find("election_prefix"),
            std::string::npos);
  auto revision = env_->client->put("/plain", "1");
  ASSERT_TRUE(env_->wait_mirrored(revision, 10s, ""));
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd WHERE key LIKE '/etcd-sync/election/%'"), "0");
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd WHERE key = '/plain'"), "1");
  EXPECT_EQ(instance(0).terminate(), 0);
}

}  // namespace
}  // namespace etcd_sync::testing
