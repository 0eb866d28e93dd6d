// Network partitions against real servers: etcd-sync runs in an isolated host (a network namespace
// of its own, test/support/netns.hpp) and iptables inside it drops its packets to and from etcd,
// PostgreSQL or both, without a reset: the peer goes silent, as when a switch drops a link or a
// host vanishes. Each test checks what an operator would see and what happens to the data:
//   - within the request deadline, a warn line naming the side and endpoint ("peer unreachable")
//     and /readyz 503;
//   - after the heal, an info line ("peer reachable again") and work resumed within 2 s: a put made
//     during the cut is mirrored and an etcd_wal row written after the heal reaches etcd;
//   - with two instances (ttl 3 s), a leader cut from PostgreSQL, from etcd or from both is
//     replaced by the standby within ttl + 2 s, and rows flow through the new leader.
// The measured times are printed (FIGURE lines), to be compared with the targets above.
//
// This binary has its own main(): it enters a private network namespace before gtest starts and
// before any thread or socket exists. Without root every test is skipped, saying why.

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test/support/http_get.hpp"
#include "test/support/log_lines.hpp"
#include "test/support/netns.hpp"
#include "test/support/ports.hpp"
#include "test/support/servers.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

/// How long the deadlines of the instances under test are ([postgresql] and [etcd]
/// request_timeout), and their election's ttl.
constexpr auto kRequestTimeout = 2s;
constexpr auto kTtl = 3s;
/// How long each cut lasts: longer than ttl, so a leader's resign rule is reached.
constexpr auto kCut = 6s;
/// The targets: detection within the deadline (plus a second for the check that notices it), takeover
/// within ttl + 2 s, resume within 2 s of the heal (plus a second of slack for a loaded CI machine).
constexpr auto kDetectWithin = kRequestTimeout + 1s;
constexpr auto kTakeoverWithin = kTtl + 2s;
constexpr auto kResumeWithin = 3s;

/// What is left of a cut that began at `cut_at` and lasts kCut.
std::chrono::milliseconds remaining(steady_clock::time_point cut_at) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kCut - (steady_clock::now() - cut_at));
  return std::max(left, std::chrono::milliseconds(0));
}

double seconds_since(steady_clock::time_point from) {
  return std::chrono::duration<double>(steady_clock::now() - from).count();
}

/// One etcd-sync instance in an isolated host of its own.
struct Instance {
  Instance(const std::filesystem::path& dir, const std::string& id) : id(id), service(dir, "etcd-sync-" + id) {
    service.set_wrapper(host.exec_prefix());
  }
  std::string id;
  IsolatedHost host;
  ServiceProcess service;
  int metrics_port = free_loopback_port();

  /// GET /readyz (or `path`) on the instance's metrics listener: "503\n..." or "" when no answer.
  std::string get(const std::string& path = "/readyz") {
    return http_get_bounded(metrics_port, path, 1s, host.host_address());
  }
  bool ready() { return get().rfind("200", 0) == 0; }
  bool not_ready() { return get().rfind("503", 0) == 0; }
  bool leads() { return get("/leader").rfind("200", 0) == 0; }
};

class PartitionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!in_private_network()) return;
    servers_ = std::make_unique<ServerPair>(true);
    client_ = std::make_unique<EtcdTestClient>(servers_->etcd.endpoint());
  }
  static void TearDownTestSuite() {
    client_.reset();
    servers_.reset();
  }

  void SetUp() override {
    if (!in_private_network()) GTEST_SKIP() << "no private network namespace: " << private_network_error();
    ASSERT_TRUE(servers_ && servers_->etcd.is_running());
    ASSERT_TRUE(servers_ && servers_->postgres.is_running());
    database_ = "partition_" + std::to_string(++databases_);
    servers_->postgres.create_database(database_);
    db_ = std::make_unique<PgClient>(servers_->postgres.conninfo(database_));
    prefix_ = "/" + database_ + "/";
  }
  void TearDown() override {
    instances_.clear();  // each instance's process before its host
    db_.reset();
  }

  Instance& add_instance() {
    auto instance = std::make_unique<Instance>(servers_->dir.path(), "i" + std::to_string(instances_.size() + 1) + "-" + database_);
    instances_.push_back(std::move(instance));
    return *instances_.back();
  }

  /// Writes the instance's config (servers at its host's server address) and starts it.
  void start(Instance& instance) {
    const std::string server = instance.host.server_address();
    const auto path = servers_->dir.path() / (instance.id + ".toml");
    std::ofstream out(path);
    out << "[postgresql]\ndsn = \"host=" << server << " port=" << servers_->postgres.port() << " dbname=" << database_
        << " user=postgres\"\nrequest_timeout = \"2s\"\n\n"
        << "[etcd]\nendpoints = [\"" << server << ":" << servers_->etcd.client_port() << "\"]\nprefix = \"" << prefix_
        << "\"\ndial_timeout = \"1s\"\nrequest_timeout = \"2s\"\n\n"
        << "[sync]\nsync_interval = \"1s\"\n\n[sync.retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"1s\"\n\n"
        << "[logging]\nlevel = \"debug\"\nformat = \"json\"\n\n"
        << "[metrics]\nlisten = \"" << instance.host.host_address() << ":" << instance.metrics_port << "\"\n\n"
        << "[ha]\nttl = \"3s\"\ninstance_id = \"" << instance.id << "\"\n"
        << "election_prefix = \"/etcd-sync/election/" << database_ << "/\"\n";  // apart from earlier tests' leases
    out.close();
    instance.service.start({"start", "-c", path.string()});
    ASSERT_TRUE(instance.service.wait_for_log("etcd-sync started", 30s)) << instance.service.log_text();
  }

  /// The instance that leads now (its /leader is 200), waiting up to `deadline` for one.
  Instance* wait_leader(std::chrono::milliseconds deadline, Instance* other_than = nullptr) {
    Instance* found = nullptr;
    wait_until(
        [&] {
          for (auto& i : instances_)
            if (i.get() != other_than && i->leads()) found = i.get();
          return found != nullptr;
        },
        deadline, 50ms);
    return found;
  }

  /// Inserts an etcd_wal row putting `key` = `value` (base: absent) and waits up to `deadline`
  /// for etcd to hold it; returns the seconds it took, or nullopt.
  std::optional<double> row_reaches_etcd(const std::string& key, const std::string& value,
                                         std::chrono::milliseconds deadline) {
    const auto began = steady_clock::now();
    db_->exec_params("INSERT INTO etcd_wal (key, value) VALUES ($1, $2)", {prefix_ + key, value});
    const bool arrived = wait_until(
        [&] {
          auto kv = client_->get(prefix_ + key);
          return kv && kv->value() == value;
        },
        deadline, 20ms);
    if (!arrived) return std::nullopt;
    return seconds_since(began);
  }

  /// Waits up to `deadline` for the `etcd` table to hold `key` at `revision`.
  bool mirrored(const std::string& key, std::int64_t revision, std::chrono::milliseconds deadline) {
    return wait_until(
        [&] {
          auto rows = db_->exec_params("SELECT 1 FROM etcd WHERE key = $1 AND revision = $2::bigint",
                                       {prefix_ + key, std::to_string(revision)});
          return !rows.empty();
        },
        deadline, 20ms);
  }

  /// `etcd-sync status --format json` run from the test's side (servers on 127.0.0.1), parsed;
  /// null when it did not print one object.
  nlohmann::json status_json() {
    const auto path = servers_->dir.path() / (database_ + "-status.toml");
    std::ofstream out(path);
    out << "[postgresql]\ndsn = \"" << servers_->postgres.conninfo(database_) << "\"\n\n[etcd]\nendpoints = [\""
        << servers_->etcd.endpoint() << "\"]\nprefix = \"" << prefix_ << "\"\n";
    out.close();
    const auto result = run_binary({"status", "--format", "json", "-c", path.string()}, {}, 10s);
    auto parsed = nlohmann::json::parse(result.stdout_text, nullptr, false);
    return parsed.is_discarded() ? nlohmann::json() : parsed;
  }

  /// Waits for a JSON log line of `instance` since its mark with every field of `fields`.
  bool logged(Instance& instance, const LogFields& fields, std::chrono::milliseconds deadline) {
    return wait_until([&] { return find_log_line(instance.service.log_since_mark(), fields).has_value(); }, deadline, 20ms);
  }

  /// One instance, cut from the server on `port` (`peer`: "postgresql" or "etcd") for kCut:
  /// detection, /readyz and status during the cut; the heal, and work resumed after it.
  void cut_and_heal_one(int port, const std::string& peer) {
    Instance& instance = add_instance();
    start(instance);
    ASSERT_TRUE(wait_leader(15s)) << instance.service.log_text();
    ASSERT_TRUE(row_reaches_etcd("before", "1", 10s)) << instance.service.log_text();
    ASSERT_TRUE(wait_until([&] { return instance.ready(); }, 10s)) << instance.get();

    instance.service.mark_log();
    const auto cut_at = steady_clock::now();
    instance.host.cut(port);
    ASSERT_TRUE(logged(instance, {{"level", "warn"}, {"msg", "peer unreachable"}, {"peer", peer}}, kDetectWithin + 2s))
        << instance.service.log_since_mark();
    const double detected = seconds_since(cut_at);
    auto line = find_log_line(instance.service.log_since_mark(), {{"msg", "peer unreachable"}, {"peer", peer}});
    EXPECT_NE(line->value("endpoint", "").find(std::to_string(port)), std::string::npos) << line->dump();
    ASSERT_TRUE(wait_until([&] { return instance.not_ready(); }, kDetectWithin)) << instance.get();
    const double unready = seconds_since(cut_at);
    EXPECT_LE(detected, std::chrono::duration<double>(kDetectWithin).count());
    const auto put_during = client_->put(prefix_ + "during", "cut");
    // Status says which side and since when: the heartbeat records an etcd outage; an instance
    // cut from PostgreSQL cannot write one, and its heartbeat's age says so.
    nlohmann::json status;
    if (peer == "etcd") {
      EXPECT_TRUE(wait_until(
          [&] {
            status = status_json();
            return status.is_object() && status["service"]["unreachable"].contains("etcd");
          },
          3s, 100ms))
          << status.dump();
    } else {
      EXPECT_TRUE(wait_until(
          [&] {
            status = status_json();
            return status.is_object() && status["service"]["heartbeat_age_s"].is_number() &&
                   status["service"]["heartbeat_age_s"].get<double>() >= 2.0;
          },
          4s, 100ms))
          << status.dump();
    }

    // For the rest of the cut /readyz stays 503: the outage is not forgotten while it lasts.
    EXPECT_FALSE(wait_until([&] { return instance.ready(); }, remaining(cut_at))) << "ready while still cut off";
    instance.service.mark_log();
    const auto healed_at = steady_clock::now();
    instance.host.heal(port);
    EXPECT_TRUE(logged(instance, {{"msg", "peer reachable again"}, {"peer", peer}}, kResumeWithin))
        << instance.service.log_since_mark();
    EXPECT_TRUE(mirrored("during", put_during, kResumeWithin)) << instance.service.log_since_mark();
    const double mirrored_after = seconds_since(healed_at);
    auto row = row_reaches_etcd("after", "1", kResumeWithin);
    EXPECT_TRUE(row) << instance.service.log_since_mark();
    const double resumed = seconds_since(healed_at);
    EXPECT_TRUE(wait_until([&] { return instance.ready(); }, kResumeWithin)) << instance.get();
    std::cout << "FIGURE cut from " << peer << " (" << std::chrono::duration<double>(kCut).count()
              << " s, request_timeout 2 s): warn after " << detected << " s, /readyz 503 after " << unready
              << " s; after the heal: put mirrored in " << mirrored_after << " s, row applied by " << resumed
              << " s" << std::endl;
  }

  /// Two instances; the leader is cut from the servers on `ports` for kCut. The standby leads
  /// within ttl + 2 s, rows flow through it, and the old leader stands by after the heal.
  void leader_cut(const std::vector<int>& ports, const std::string& what) {
    Instance& a = add_instance();
    Instance& b = add_instance();
    start(a);
    start(b);
    Instance* leader = wait_leader(15s);
    ASSERT_TRUE(leader) << a.service.log_text() << b.service.log_text();
    Instance* standby = leader == &a ? &b : &a;
    ASSERT_TRUE(row_reaches_etcd("before", "1", 10s));
    ASSERT_TRUE(wait_until([&] { return standby->ready(); }, 10s)) << "the standby reaches both sides";

    leader->service.mark_log();
    const auto cut_at = steady_clock::now();
    for (int port : ports) leader->host.cut(port);
    ASSERT_TRUE(wait_until([&] { return standby->leads(); }, kTakeoverWithin + 3s))
        << "no takeover\n--- leader\n" << leader->service.log_since_mark() << "\n--- standby\n" << standby->service.log_text();
    const double takeover = seconds_since(cut_at);
    EXPECT_LE(takeover, std::chrono::duration<double>(kTakeoverWithin).count());
    auto row = row_reaches_etcd("during", "1", 5s);
    EXPECT_TRUE(row) << standby->service.log_text();
    EXPECT_FALSE(leader->leads()) << "the cut-off leader resigned";

    // For the rest of the cut the old leader never claims the lead again.
    EXPECT_FALSE(wait_until([&] { return leader->leads(); }, remaining(cut_at))) << leader->service.log_since_mark();
    for (int port : ports) leader->host.heal(port);
    EXPECT_TRUE(wait_until([&] { return leader->ready(); }, 10s)) << "the old leader stands by, ready";
    EXPECT_TRUE(standby->leads());
    EXPECT_FALSE(leader->leads());
    auto after = row_reaches_etcd("after", "1", 5s);
    EXPECT_TRUE(after);
    // Every row settles success (its outcome is written just after its value reaches etcd).
    EXPECT_TRUE(wait_until([&] { return db_->scalar("SELECT count(*) FROM etcd_wal WHERE status <> 'success'") == "0"; }, 5s))
        << db_->scalar("SELECT string_agg(status || ':' || coalesce(error_message, ''), ', ') FROM etcd_wal WHERE status <> 'success'").value_or("");
    std::cout << "FIGURE leader cut from " << what << " (ttl 3 s, request_timeout 2 s): the standby led after "
              << takeover << " s; a row written then applied in " << row.value_or(-1) << " s" << std::endl;
  }

  static inline std::unique_ptr<ServerPair> servers_;
  static inline std::unique_ptr<EtcdTestClient> client_;
  static inline int databases_ = 0;
  std::string database_, prefix_;
  std::unique_ptr<PgClient> db_;
  std::vector<std::unique_ptr<Instance>> instances_;
};

TEST_F(PartitionTest, CutFromPostgresqlIsReportedAndSurvived) { cut_and_heal_one(servers_->postgres.port(), "postgresql"); }

TEST_F(PartitionTest, CutFromEtcdIsReportedAndSurvived) { cut_and_heal_one(servers_->etcd.client_port(), "etcd"); }

TEST_F(PartitionTest, LeaderCutFromPostgresqlIsReplaced) { leader_cut({servers_->postgres.port()}, "PostgreSQL"); }

TEST_F(PartitionTest, LeaderCutFromEtcdIsReplaced) { leader_cut({servers_->etcd.client_port()}, "etcd"); }

TEST_F(PartitionTest, LeaderCutFromBothIsReplaced) { leader_cut({servers_->postgres.port(), servers_->etcd.client_port()}, "both"); }

// No instance reaches PostgreSQL: none claims to lead, /leader says so on each, and once the
// network heals one leads again and rows flow.
TEST_F(PartitionTest, WhenNoInstanceReachesBothSidesNoneLeads) {
  Instance& a = add_instance();
  Instance& b = add_instance();
  start(a);
  start(b);
  ASSERT_TRUE(wait_leader(15s));
  const auto cut_at = steady_clock::now();
  a.host.cut(servers_->postgres.port());
  b.host.cut(servers_->postgres.port());
  EXPECT_TRUE(wait_until([&] { return !a.leads() && !b.leads(); }, kTakeoverWithin + 2s))
      << a.service.log_text() << b.service.log_text();
  const double none = seconds_since(cut_at);
  // And it stays so while the cut lasts (checked for two seconds more: a leader would show).
  EXPECT_FALSE(wait_until([&] { return a.leads() || b.leads(); }, 2s));
  a.host.heal(servers_->postgres.port());
  b.host.heal(servers_->postgres.port());
  const auto healed_at = steady_clock::now();
  EXPECT_TRUE(wait_leader(10s));
  const double led_again = seconds_since(healed_at);
  EXPECT_TRUE(row_reaches_etcd("after", "1", 5s));
  std::cout << "FIGURE both instances cut from PostgreSQL: no leader after " << none << " s; a leader again "
            << led_again << " s after the heal" << std::endl;
}

}  // namespace
}  // namespace etcd_sync::testing

int main(int argc, char** argv) {
  // Before gtest and before any thread or socket: the namespace is per thread.
  if (!etcd_sync::testing::enter_private_network())
    std::cerr << "partition_test: " << etcd_sync::testing::private_network_error() << "; every test is skipped\n";
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
