// (h) etcd failover: a 3-member etcd cluster, one etcd-sync given all three endpoints, a steady load
// on both sides (SteadyLoad). Each round kills etcd's leader member with SIGKILL, measures how long
// etcd took to elect a new leader (every surviving member's Maintenance.Status polled every 10 ms)
// and how long etcd-sync's outbox and mirror took to flow again, then restarts the killed member.
//
// Before each kill the scenario finds the member etcd-sync works on: the one its process exchanges
// most bytes with over 0.5 s (tcp_info of its connections, from `ss -tinp`). The first rounds make
// that member the leader (`etcdctl move-leader`) and kill it, so etcd-sync's calls in flight die
// with it; the last rounds make another member the leader and kill that one while etcd-sync works
// on a follower, whose calls then wait on a leader that is gone. Each component's first error after
// the kill is printed too.

#include "perf/steady_load.hpp"
#include "test/support/etcd_cluster.hpp"

#include <nlohmann/json.hpp>

#include <cinttypes>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

/// Maintenance.Status of one member through its own single-endpoint client, from the scenario's
/// thread (blocking, 300 ms deadline).
class MemberStatus {
 public:
  explicit MemberStatus(const std::string& endpoint) : loop_(endpoint, 300ms) {}
  /// nullopt when the member does not answer, or refuses because it has no leader.
  std::optional<etcdserverpb::StatusResponse> get() {
    try {
      return loop_.run(loop_.etcd().status());
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

 private:
  testing::EtcdLoop loop_;
};

struct Round {
  int number = 0;
  bool on_leader = true;  ///< etcd-sync was expected to work on the killed member
  std::size_t victim = 0;
  std::string victim_name, new_leader_name;
  std::int64_t kill_us = 0, elected_us = 0;
  std::int64_t until_us = 0;  ///< etcd-sync had caught up: the round's rows are those committed before
  std::vector<std::int64_t> traffic;  ///< bytes etcd-sync exchanged with each member over 0.5 s before the kill
  std::map<std::string, std::string> first_errors;  ///< component -> its first error after the kill
  bool lease_lost = false;       ///< etcd-sync's log says it lost its etcd lease (it stopped leading)
  std::int64_t epoch_before = 0, epoch_after = 0;
  std::string machine;
};

/// Bytes etcd-sync's process (`pid`) exchanged with each of `ports` (the members' client ports) over
/// `window`: the sum of bytes_sent + bytes_received of its established TCP connections to that port,
/// read with `ss -tinp` (tcp_info) before and after. Tells which member its calls and watch use.
std::vector<std::int64_t> traffic_by_port(pid_t pid, const std::vector<int>& ports, std::chrono::milliseconds window) {
  auto sample = [&] {
    std::map<std::string, std::int64_t> by_connection;  // "local peer" -> bytes, per connection
    std::vector<std::pair<std::string, int>> peers;      // connection -> peer port
    auto result = testing::run_command("/usr/bin/ss", {"-tinpH", "state", "established"});
    std::istringstream lines(result.stdout_text);
    std::string line, connection;
    int port = 0;
    bool ours = false;
    while (std::getline(lines, line)) {
      if (!line.empty() && line[0] != ' ' && line[0] != '\t') {  // "recv-q send-q local peer users:(...)"
        std::istringstream words(line);
        std::string recv_q, send_q, local, peer;
        words >> recv_q >> send_q >> local >> peer;
        ours = line.find("pid=" + std::to_string(pid) + ",") != std::string::npos;
        connection = local + " " + peer;
        port = std::atoi(peer.substr(peer.rfind(':') + 1).c_str());
        continue;
      }
      if (!ours) continue;
      std::int64_t bytes = 0;
      for (const char* field : {"bytes_sent:", "bytes_received:"}) {
        auto at = line.find(field);
        if (at != std::string::npos) bytes += std::strtoll(line.c_str() + at + std::strlen(field), nullptr, 10);
      }
      by_connection[connection] = bytes;
      peers.emplace_back(connection, port);
    }
    std::map<std::string, std::pair<int, std::int64_t>> out;
    for (const auto& [c, p] : peers) out[c] = {p, by_connection[c]};
    return out;
  };
  auto before = sample();
  std::this_thread::sleep_for(window);
  auto after = sample();
  std::vector<std::int64_t> bytes(ports.size(), 0);
  for (const auto& [connection, info] : after) {
    auto it = before.find(connection);
    const std::int64_t delta = info.second - (it == before.end() ? 0 : it->second.second);
    for (std::size_t i = 0; i < ports.size(); ++i)
      if (ports[i] == info.first) bytes[i] += delta;
  }
  return bytes;
}

/// The first error each etcd-sync component logged in `log` (its "component" and "error" fields).
std::map<std::string, std::string> first_errors(const std::string& log) {
  std::map<std::string, std::string> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    try {
      auto json = nlohmann::json::parse(line);
      if (!json.contains("error") || !json.contains("component")) continue;
      auto component = json["component"].get<std::string>();
      if (!out.count(component)) out[component] = json["error"].get<std::string>();
    } catch (const std::exception&) {
    }
  }
  return out;
}

std::string hex_id(std::uint64_t id) { return format("%" PRIx64, id); }

/// The leading instance's epoch; 0 when there is none, or no such table (a build before HA, measured
/// with --service-binary).
std::int64_t leader_epoch(testing::PgClient& db) {
  try {
    auto epoch = db.scalar("SELECT epoch FROM etcd_sync_leader");
    return epoch ? std::stoll(*epoch) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

/// Waits until the outbox and the mirror are current: no etcd_wal row committed over a second ago
/// is pending, and the mirror's checkpoint has reached etcd's revision as of the call.
bool wait_current(BenchEnv& env, MemberStatus& member, std::chrono::seconds deadline) {
  auto& db = env.env.db();
  bool wal = testing::wait_until(
      [&] { return db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending' AND ts < now() - interval '1 second'") == "0"; },
      deadline, 50ms);
  auto status = member.get();
  if (!status) return false;
  return wal && env.env.wait_mirrored(status->header().revision(), deadline, bench_prefix);
}

}  // namespace

Outcome run_failover(const BenchOptions& options) {
  std::printf("== (h) etcd failover: 3 members, %.0f etcd_wal rows/s and %.0f puts/s; %d + %d kills of etcd's leader ==\n",
              options.load_rate, options.load_rate, options.rounds, options.follower_rounds);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "failover", settings, options);
  env.env.etcd.stop();  // the single etcd of BenchEnv is not used: the cluster below is
  testing::EtcdCluster cluster(env.env.dir.path(), 3, "bench-etcd");
  // The members' logs stay with the scenario's, also when it fails.
  struct KeepLogs {
    testing::EtcdCluster& cluster;
    fs::path dir;
    ~KeepLogs() {
      std::error_code ec;
      for (std::size_t i = 0; i < cluster.size(); ++i)
        fs::copy_file(cluster.member(i).log_path(), dir / (cluster.member(i).name() + ".log"),
                      fs::copy_options::overwrite_existing, ec);
    }
  } keep_logs{cluster, options.out_dir / "failover"};
  cluster.start();
  const auto first_leader = cluster.wait_for_leader(20s);
  // etcd-sync connects to the first endpoint that answers, preferring the order given: the leader.
  std::vector<std::size_t> order = {first_leader, (first_leader + 1) % 3, (first_leader + 2) % 3};
  std::vector<std::string> endpoints;
  for (auto i : order) endpoints.push_back(cluster.member(i).endpoint());
  env.use_config(env.write_config(settings, "etcd-sync.toml", endpoints));
  env.start_service();
  detail("servers: " + env.versions() + "; etcd cluster of 3 (heartbeat 100 ms, election timeout 1 s); etcd-sync's endpoints " +
         endpoints[0] + ", " + endpoints[1] + ", " + endpoints[2] +
         format("; [sync.retry] initial_backoff %s, request_timeout %s", settings.initial_backoff.c_str(),
                settings.request_timeout.c_str()));
  std::vector<std::unique_ptr<MemberStatus>> members;
  std::vector<std::uint64_t> member_ids;
  for (std::size_t i = 0; i < 3; ++i) {
    members.push_back(std::make_unique<MemberStatus>(cluster.member(i).endpoint()));
    auto status = members[i]->get();
    if (!status) throw std::runtime_error("etcd member " + cluster.member(i).name() + " does not answer Status");
    member_ids.push_back(status->header().member_id());
  }
  auto member_name = [&](std::uint64_t id) {
    for (std::size_t i = 0; i < 3; ++i)
      if (member_ids[i] == id) return cluster.member(i).name();
    return hex_id(id);
  };

  auto& db = env.env.db();
  SteadyLoad load(endpoints, env.conninfo(), options.load_rate);
  load.start();
  auto applied = [&] { return std::stoll(db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'success'").value_or("0")); };
  if (!testing::wait_until([&] { return applied() >= static_cast<std::int64_t>(2 * options.load_rate); }, 30s, 50ms))
    throw std::runtime_error("the load does not flow: " + env.env.wal_status_counts());

  std::vector<Round> rounds;
  std::vector<int> ports;
  for (std::size_t i = 0; i < 3; ++i) ports.push_back(cluster.member(i).client_port());
  const int total = options.rounds + options.follower_rounds;
  for (int r = 0; r < total; ++r) {
    Round round;
    round.number = r + 1;
    round.on_leader = r < options.rounds;
    // Find the member etcd-sync works on (most of its bytes), make the member to kill etcd's
    // leader, let the load settle, and look again: a leadership transfer can move etcd-sync's calls.
    for (int attempt = 1;; ++attempt) {
      auto traffic = traffic_by_port(env.service_pid(), ports, 500ms);
      const auto busiest = static_cast<std::size_t>(std::max_element(traffic.begin(), traffic.end()) - traffic.begin());
      const auto quietest = static_cast<std::size_t>(std::min_element(traffic.begin(), traffic.end()) - traffic.begin());
      std::int64_t all = 0;
      for (auto bytes : traffic) all += bytes;
      // On a follower: the member to kill carries under 5% of etcd-sync's bytes.
      if (attempt > 1 && (round.on_leader ? busiest == round.victim : traffic[round.victim] * 20 < all)) {
        round.traffic = traffic;
        break;
      }
      if (attempt > 4) throw std::runtime_error("etcd-sync's calls keep moving between members; round " + std::to_string(round.number));
      round.victim = round.on_leader ? busiest : quietest;
      round.victim_name = cluster.member(round.victim).name();
      if (cluster.wait_for_leader(20s) != round.victim) {
        cluster.etcdctl({"move-leader", hex_id(member_ids[round.victim])});
        if (!testing::wait_until([&] { return cluster.leader_index() == round.victim; }, 20s, 50ms))
          throw std::runtime_error("etcd's leadership did not move to " + round.victim_name);
      }
      const auto before = applied();
      if (!testing::wait_until([&] { return applied() >= before + static_cast<std::int64_t>(2 * options.load_rate); }, 30s, 50ms) ||
          !wait_current(env, *members[round.victim], 30s))
        throw std::runtime_error("the load does not flow before round " + std::to_string(round.number) + ": " +
                                 env.env.wal_status_counts());
    }
    round.epoch_before = leader_epoch(db);
    MachineShare machine;
    machine.start();
    env.service.mark_log();
    round.kill_us = wall_micros();
    cluster.member(round.victim).kill9();

    // A new leader: every surviving member answers and names the same leader, not the victim.
    const auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      std::optional<std::uint64_t> named;
      bool agreed = true;
      for (std::size_t i = 0; i < 3 && agreed; ++i) {
        if (i == round.victim) continue;
        auto status = members[i]->get();
        if (!status || status->leader() == 0 || status->leader() == member_ids[round.victim] ||
            (named && *named != status->leader())) {
          agreed = false;
          break;
        }
        named = status->leader();
      }
      if (agreed && named) {
        round.elected_us = wall_micros();
        round.new_leader_name = member_name(*named);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (round.elected_us == 0) throw std::runtime_error("etcd elected no new leader within 30 s of the kill");
    std::size_t survivor = (round.victim + 1) % 3;
    if (!wait_current(env, *members[survivor], 60s))
      throw std::runtime_error("etcd-sync did not catch up within 60 s after round " + std::to_string(round.number) + ": " +
                               env.env.wal_status_counts());
    round.until_us = wall_micros();  // rows and puts up to here count for this round
    round.machine = machine.stop();
    round.epoch_after = leader_epoch(db);
    const auto log = env.service.log_since_mark();
    round.first_errors = first_errors(log);
    round.lease_lost = log.find("etcd lease lost") != std::string::npos;
    cluster.member(round.victim).start();  // rejoins with its data, on its ports
    rounds.push_back(round);
    detail(format("round %d done: killed %s, etcd elected %s", round.number, round.victim_name.c_str(),
                  round.new_leader_name.c_str()));
  }
  {
    const auto before = applied();
    testing::wait_until([&] { return applied() >= before + static_cast<std::int64_t>(options.load_rate); }, 30s, 50ms);
  }
  load.stop();
  wait_current(env, *members[0], 60s);
  const bool drained = db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == "0";
  auto outcomes = LoadOutcomes::read(db, load.rows().size());

  // --- figures ---
  double worst_elected = 0, worst_outbox = -1, worst_mirror = -1, worst_outage_max = 0;
  bool every_round_resumed = true, target_met = true;
  for (const auto& round : rounds) {
    auto f = fault_figures(load, outcomes, round.kill_us, round.until_us);
    const double elected = seconds_between(round.kill_us, round.elected_us);
    const double outbox_from_election = seconds_between(round.elected_us, f.first_applied_us);
    const double mirror_from_kill = seconds_between(round.kill_us, f.first_mirrored_us);
    std::printf("  round %d: kill -9 of %s, etcd's leader, %s\n", round.number, round.victim_name.c_str(),
                round.on_leader ? "where etcd-sync worked" : "while etcd-sync worked on a follower");
    std::string traffic;
    for (std::size_t i = 0; i < 3; ++i)
      traffic += format("%s%s %.1f kB", i ? ", " : "", cluster.member(i).name().c_str(), round.traffic[i] / 1e3);
    detail("  etcd-sync's bytes to and from each member over 0.5 s before the kill: " + traffic);
    std::string errors;
    for (const auto& [component, error] : round.first_errors)
      errors += format("%s%s: %s", errors.empty() ? "" : "; ", component.c_str(), error.substr(0, 110).c_str());
    detail("  first error after the kill per component: " + (errors.empty() ? std::string("none") : errors));
    detail(format("  kill -> new etcd leader (%s): %.3f s", round.new_leader_name.c_str(), elected));
    detail(format("  outbox: new leader -> first row inserted after the kill applied: %.3f s (kill -> %.3f s; target <= 2 s "
                  "after the election: %s)",
                  outbox_from_election, seconds_between(round.kill_us, f.first_applied_us),
                  outbox_from_election >= 0 && outbox_from_election <= 2.0 ? "met" : "MISSED"));
    detail(format("  rows inserted during the outage (after the kill, before the outbox applied again): %lld, commit -> "
                  "applied p50 %.3f s, max %.3f s; all %lld rows of the round: p50 %.3f s, p99 %.3f s, max %.3f s",
                  static_cast<long long>(f.outage_rows), f.outage_wait_ms.p50 / 1e3, f.outage_wait_ms.max / 1e3,
                  static_cast<long long>(f.rows_after), f.after_wait_ms.p50 / 1e3, f.after_wait_ms.p99 / 1e3,
                  f.after_wait_ms.max / 1e3));
    std::string statuses;
    for (const auto& [status, n] : f.in_flight_statuses) statuses += format(" %s:%lld", status.c_str(), static_cast<long long>(n));
    detail(format("  rows inserted before the kill, unapplied at it (in flight or in doubt): %lld, settled by kill + %.3f s (%s)",
                  static_cast<long long>(f.in_flight),
                  f.in_flight > 0 ? seconds_between(round.kill_us, f.in_flight_settled_us) : 0.0,
                  statuses.empty() ? "none" : statuses.substr(1).c_str()));
    detail(format("  mirror: kill -> first revision committed after the kill mirrored: %.3f s (new leader -> %.3f s); "
                  "the load's puts: %lld failed during the outage, first answered kill + %.3f s; puts answered -> "
                  "mirrored p50 %.3f s, max %.3f s",
                  mirror_from_kill, seconds_between(round.elected_us, f.first_mirrored_us),
                  static_cast<long long>(f.puts_failed), seconds_between(round.kill_us, f.first_put_answered_us),
                  f.put_mirror_ms.p50 / 1e3, f.put_mirror_ms.max / 1e3));
    if (round.epoch_before == 0)
      detail("  (no etcd_sync_leader: a build without leader election)");
    else
      detail(format("  etcd-sync %s (epoch %lld -> %lld%s)",
                  round.epoch_before == round.epoch_after && !round.lease_lost ? "kept leading" : "STOPPED LEADING",
                  static_cast<long long>(round.epoch_before), static_cast<long long>(round.epoch_after),
                  round.lease_lost ? ", its etcd lease was lost" : ""));
    detail("  " + round.machine);
    worst_elected = std::max(worst_elected, elected);
    worst_outbox = std::max(worst_outbox, outbox_from_election);
    worst_mirror = std::max(worst_mirror, mirror_from_kill);
    worst_outage_max = std::max(worst_outage_max, f.outage_wait_ms.max / 1e3);
    if (f.first_applied_us == 0 || f.first_mirrored_us == 0) every_round_resumed = false;
    if (!(outbox_from_election >= 0 && outbox_from_election <= 2.0)) target_met = false;
  }
  const bool applied_once = outcomes.applied_once(static_cast<std::int64_t>(load.rows().size()), drained);
  detail("load average after: " + load_average());
  env.stop_service();
  const bool met = target_met && every_round_resumed && applied_once && drained;
  return {"h failover",
          format("worst of %zu kills: new etcd leader after %.2f s; outbox applies %.2f s after the election (target <= 2 s: "
                 "%s); first mirrored revision %.2f s after the kill; rows of the outage waited up to %.2f s",
                 rounds.size(), worst_elected, worst_outbox, target_met ? "met" : "MISSED", worst_mirror, worst_outage_max),
          met};
}

}  // namespace etcd_sync::bench
