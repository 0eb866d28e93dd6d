// (h) etcd failover: a 3-member etcd cluster, one etcd-sync given all three endpoints, a steady load
// on both sides (SteadyLoad). Each round kills etcd's leader member with SIGKILL, measures how long
// etcd took to elect a new leader (every surviving member's Maintenance.Status polled every 10 ms)
// and how long etcd-sync's outbox and mirror took to flow again, then restarts the killed member.
//
// The first rounds make the member etcd-sync works on the leader before killing it (etcd-sync
// starts on the first endpoint of its list, the leader; after a failure its calls move to the next
// endpoint; `etcdctl move-leader` hands the leadership there), so its calls in flight die with the
// leader. The last rounds kill the leader while etcd-sync works on a follower, whose calls wait on a
// leader that is gone. The log says whether etcd-sync's calls were on the killed member.

#include "perf/steady_load.hpp"
#include "test/support/etcd_cluster.hpp"

#include <cinttypes>
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
  bool hit = false;              ///< etcd-sync's log names the killed member's endpoint after the kill
  bool lease_lost = false;       ///< etcd-sync's log says it lost its etcd lease (it stopped leading)
  std::int64_t epoch_before = 0, epoch_after = 0;
  std::string machine;
};

std::string hex_id(std::uint64_t id) { return format("%" PRIx64, id); }

std::int64_t leader_epoch(testing::PgClient& db) {
  auto epoch = db.scalar("SELECT epoch FROM etcd_sync_leader");
  return epoch ? std::stoll(*epoch) : 0;
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
  std::size_t expected = 0;  // index into `order`: the member etcd-sync's calls go to
  const int total = options.rounds + options.follower_rounds;
  for (int r = 0; r < total; ++r) {
    Round round;
    round.number = r + 1;
    round.on_leader = r < options.rounds;
    round.victim = round.on_leader ? order[expected] : order[(expected + 1) % 3];
    round.victim_name = cluster.member(round.victim).name();
    // Hand etcd's leadership to the member to kill, then let the load settle on it.
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
    round.hit = log.find(cluster.member(round.victim).endpoint()) != std::string::npos;
    round.lease_lost = log.find("etcd lease lost") != std::string::npos;
    cluster.member(round.victim).start();  // rejoins with its data, on its ports
    if (round.on_leader) expected = (expected + 1) % 3;
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
    std::printf("  round %d: kill -9 of %s, etcd's leader, %s (etcd-sync's log %s the killed member after the kill)\n",
                round.number, round.victim_name.c_str(),
                round.on_leader ? "where etcd-sync worked" : "while etcd-sync worked on a follower",
                round.hit ? "names" : "does not name");
    detail(format("  kill -> new etcd leader (%s): %.3f s", round.new_leader_name.c_str(), elected));
    detail(format("  outbox: new leader -> first row committed after the kill applied: %.3f s (kill -> %.3f s; target <= 2 s "
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
    detail(format("  rows committed before the kill, unapplied at it (in flight or in doubt): %lld, settled by kill + %.3f s (%s)",
                  static_cast<long long>(f.in_flight),
                  f.in_flight > 0 ? seconds_between(round.kill_us, f.in_flight_settled_us) : 0.0,
                  statuses.empty() ? "none" : statuses.substr(1).c_str()));
    detail(format("  mirror: kill -> first revision committed after the kill mirrored: %.3f s (new leader -> %.3f s); "
                  "the load's puts: %lld failed during the outage, first answered kill + %.3f s; puts answered -> "
                  "mirrored p50 %.3f s, max %.3f s",
                  mirror_from_kill, seconds_between(round.elected_us, f.first_mirrored_us),
                  static_cast<long long>(f.puts_failed), seconds_between(round.kill_us, f.first_put_answered_us),
                  f.put_mirror_ms.p50 / 1e3, f.put_mirror_ms.max / 1e3));
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
  std::string statuses;
  for (const auto& [status, n] : outcomes.status_counts) statuses += format(" %s:%lld", status.c_str(), static_cast<long long>(n));
  const auto row_count = static_cast<std::int64_t>(load.rows().size());
  const bool applied_once = outcomes.wal_keys_in_mirror == outcomes.distinct_wal_keys_in_mirror &&
                            outcomes.status_counts["success"] == row_count && outcomes.wal_keys_in_mirror == row_count;
  detail(format("%lld rows in all:%s; %s; the mirror holds %lld rows of their %lld keys (%s)", static_cast<long long>(row_count),
                statuses.c_str(), drained ? "none pending at the end" : "SOME STILL PENDING",
                static_cast<long long>(outcomes.wal_keys_in_mirror),
                static_cast<long long>(outcomes.distinct_wal_keys_in_mirror),
                applied_once ? "every row applied once" : "MISMATCH"));
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
