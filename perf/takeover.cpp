// (i) takeover: two etcd-sync instances (distinct [ha] instance_id) on one etcd and one database,
// a steady load on both sides (SteadyLoad). For each [ha] ttl, three faults of whichever instance
// leads: SIGTERM, kill -9, and SIGSTOP for ttl + 2 s then SIGCONT. Measured from the fault: the
// standby leading (its "leading" log line, written once its epoch is in etcd_sync_leader), the
// first etcd_wal row inserted after the fault applied, the first revision committed after the
// fault mirrored; for SIGSTOP also that the old leader, continued, stands by (its etcd_sync_service
// row says role standby) and why (lease lost or fenced). An instance that was terminated or killed
// is started again (it joins as the standby) before the next fault.

#include "perf/steady_load.hpp"

#include <csignal>
#include <thread>

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

enum class Fault { sigterm, kill9, sigstop };

const char* fault_name(Fault fault) {
  switch (fault) {
    case Fault::sigterm: return "SIGTERM";
    case Fault::kill9: return "kill -9";
    case Fault::sigstop: return "SIGSTOP";
  }
  return "?";
}

struct Case {
  int ttl = 0;
  Fault fault = Fault::sigterm;
  std::string old_leader, new_leader;
  std::int64_t fault_us = 0, leading_us = 0, seen_us = 0, cont_us = 0, standby_us = 0, until_us = 0;
  std::int64_t epoch_before = 0, epoch_after = 0;
  std::optional<int> exit_code;  ///< SIGTERM: the old leader's exit code
  bool stood_by = false;         ///< SIGSTOP: the old leader's row says standby after SIGCONT
  std::string why;               ///< SIGSTOP: what the old leader's log says it learnt
  std::string machine;
};

std::optional<std::pair<std::string, std::int64_t>> current_leader(testing::PgClient& db) {
  auto rows = db.exec("SELECT instance_id, epoch FROM etcd_sync_leader");
  if (rows.empty()) return std::nullopt;
  return std::pair(*rows[0][0], std::stoll(*rows[0][1]));
}

std::string role_of(testing::PgClient& db, const std::string& instance) {
  return db.exec_params("SELECT coalesce(role, '') FROM etcd_sync_service WHERE instance_id = $1", {instance})
      .at(0)
      .at(0)
      .value_or("");
}

/// Waits until `instance` leads: its epoch in etcd_sync_leader and its heartbeat saying leader.
bool wait_leading(testing::PgClient& db, const std::string& instance, std::chrono::milliseconds deadline) {
  return testing::wait_until(
      [&] {
        auto leader = current_leader(db);
        return leader && leader->first == instance && role_of(db, instance) == "leader";
      },
      deadline, 20ms);
}

/// Waits until no etcd_wal row committed over a second ago is pending and the mirror has reached
/// etcd's revision as of the call.
bool wait_current(BenchEnv& env, std::chrono::seconds deadline) {
  auto& db = env.env.db();
  bool wal = testing::wait_until(
      [&] { return db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending' AND ts < now() - interval '1 second'") == "0"; },
      deadline, 50ms);
  return wal && env.env.wait_mirrored(env.env.client->revision(), deadline, bench_prefix);
}

void start_instance(ServiceUnderTest& node, const fs::path& config) {
  node.start({"start", "-c", config.string()});
  if (!node.wait_for_log("\"component\":\"elector\",\"from\":\"campaigning\"", 20s))
    throw std::runtime_error("an instance did not join the election:\n" + node.log_since_mark());
}

}  // namespace

Outcome run_takeover(const BenchOptions& options) {
  std::string ttls;
  for (int ttl : options.ttls) ttls += (ttls.empty() ? "" : ", ") + std::to_string(ttl) + " s";
  std::printf("== (i) takeover: 2 instances, %.0f etcd_wal rows/s and %.0f puts/s; SIGTERM, kill -9 and SIGSTOP of the "
              "leader; ttl %s ==\n",
              options.load_rate, options.load_rate, ttls.c_str());
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "takeover", settings, options);
  env.migrate();  // the load inserts into etcd_wal from the start
  detail("servers: " + env.versions() + "; one etcd member" +
         format("; [sync.retry] initial_backoff %s, request_timeout %s", settings.initial_backoff.c_str(),
                settings.request_timeout.c_str()));
  auto& db = env.env.db();
  const std::vector<std::string> names = {"node-0", "node-1"};
  std::vector<std::unique_ptr<ServiceUnderTest>> nodes;
  for (const auto& name : names)
    nodes.push_back(std::make_unique<ServiceUnderTest>(env.service.binary(), options.out_dir / "takeover" / (name + ".log")));
  auto index_of = [&](const std::string& name) { return name == names[0] ? 0 : 1; };

  SteadyLoad load({env.etcd_endpoint()}, env.conninfo(), options.load_rate);
  load.start();
  auto applied = [&] { return std::stoll(db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'success'").value_or("0")); };

  std::vector<Case> cases;
  for (int ttl : options.ttls) {
    std::vector<fs::path> configs;
    for (const auto& name : names)
      configs.push_back(env.write_config(settings, name + "-ttl" + std::to_string(ttl) + ".toml", {},
                                         format("\n[ha]\ninstance_id = \"%s\"\nttl = \"%ds\"\n", name.c_str(), ttl)));
    start_instance(*nodes[0], configs[0]);
    if (!wait_leading(db, names[0], 20s)) throw std::runtime_error("node-0 does not lead:\n" + nodes[0]->log_since_mark());
    start_instance(*nodes[1], configs[1]);
    if (!nodes[1]->wait_for_log("\"to\":\"standby\"", 20s))
      throw std::runtime_error("node-1 does not stand by:\n" + nodes[1]->log_since_mark());

    for (Fault fault : {Fault::sigterm, Fault::kill9, Fault::sigstop}) {
      Case c;
      c.ttl = ttl;
      c.fault = fault;
      auto leader = current_leader(db);
      if (!leader) throw std::runtime_error("no instance leads");
      c.old_leader = leader->first;
      c.epoch_before = leader->second;
      c.new_leader = names[1 - index_of(c.old_leader)];
      auto& old_node = *nodes[index_of(c.old_leader)];
      auto& new_node = *nodes[index_of(c.new_leader)];
      const auto before = applied();
      if (!testing::wait_until([&] { return applied() >= before + static_cast<std::int64_t>(2 * options.load_rate); }, 60s, 50ms) ||
          !wait_current(env, 30s))
        throw std::runtime_error(std::string("the load does not flow before ") + fault_name(fault) + ": " +
                                 env.env.wal_status_counts());
      old_node.mark_log();
      new_node.mark_log();
      MachineShare machine;
      machine.start();
      c.fault_us = wall_micros();
      switch (fault) {
        case Fault::sigterm: old_node.signal(SIGTERM); break;
        case Fault::kill9: old_node.kill9(); break;
        case Fault::sigstop: old_node.signal(SIGSTOP); break;
      }
      const auto limit = std::chrono::seconds(3 * ttl + 20);
      if (!testing::wait_until([&] { auto l = current_leader(db); return l && l->first == c.new_leader; }, limit, 10ms))
        throw std::runtime_error(c.new_leader + " did not take over within " + std::to_string(limit.count()) + " s:\n" +
                                 new_node.log_since_mark());
      c.seen_us = wall_micros();
      c.epoch_after = current_leader(db)->second;
      testing::wait_until([&] { return new_node.log_since_mark().find("\"msg\":\"leading\"") != std::string::npos; }, 5s);
      c.leading_us = log_line_time(new_node.log_since_mark(), {"\"msg\":\"leading\""}).value_or(c.seen_us);
      switch (fault) {
        case Fault::sigterm:
          c.exit_code = old_node.wait_exit(20s);
          break;
        case Fault::kill9: break;
        case Fault::sigstop: {
          // Frozen for ttl + 2 s, counted from the SIGSTOP.
          const auto frozen_until = c.fault_us + (static_cast<std::int64_t>(ttl) + 2) * 1000000;
          while (wall_micros() < frozen_until) std::this_thread::sleep_for(10ms);
          c.cont_us = wall_micros();
          old_node.signal(SIGCONT);
          c.stood_by = testing::wait_until(
              [&] {
                return old_node.log_since_mark().find("\"to\":\"standby\"") != std::string::npos &&
                       role_of(db, c.old_leader) == "standby";
              },
              30s, 20ms);
          c.standby_us = wall_micros();
          const auto back = old_node.log_since_mark();
          if (back.find("etcd lease lost") != std::string::npos) c.why += ", its etcd lease was lost";
          if (back.find("fenced") != std::string::npos) c.why += ", a write was fenced";
          c.why = c.why.empty() ? "neither a lost lease nor a fence in its log" : c.why.substr(2);
          break;
        }
      }
      if (!wait_current(env, 60s))
        throw std::runtime_error(std::string("etcd-sync did not catch up after ") + fault_name(fault) + ": " +
                                 env.env.wal_status_counts());
      c.until_us = wall_micros();
      c.machine = machine.stop();
      if (fault != Fault::sigstop) {
        start_instance(old_node, configs[index_of(c.old_leader)]);
        if (!old_node.wait_for_log("\"to\":\"standby\"", 20s))
          throw std::runtime_error(c.old_leader + " does not stand by after its restart:\n" + old_node.log_since_mark());
      }
      detail(format("ttl %d s, %s of %s: %s leads", ttl, fault_name(fault), c.old_leader.c_str(), c.new_leader.c_str()));
      cases.push_back(c);
    }
    // The standby first, then the leader (which hands over to nobody).
    auto leader_now = current_leader(db);
    const int leading = leader_now ? index_of(leader_now->first) : 0;
    nodes[1 - leading]->terminate();
    nodes[leading]->terminate();
  }
  load.stop();
  // Nothing runs now: start one instance to drain what the load left, then check every row.
  {
    auto config = env.write_config(settings, "drain.toml", {}, "\n[ha]\ninstance_id = \"node-0\"\nttl = \"2s\"\n");
    start_instance(*nodes[0], config);
    wait_leading(db, names[0], 20s);
    wait_current(env, 60s);
    nodes[0]->terminate();
  }
  const bool drained = db.scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == "0";
  auto outcomes = LoadOutcomes::read(db, load.rows().size());

  bool all_met = true;
  std::string summary;
  for (const auto& c : cases) {
    auto f = fault_figures(load, outcomes, c.fault_us, c.until_us);
    const double target = c.fault == Fault::sigterm ? 2.0 : c.ttl + 2.0;
    const double leading = seconds_between(c.fault_us, c.leading_us);
    const double outbox = seconds_between(c.fault_us, f.first_applied_us);
    const double mirror = seconds_between(c.fault_us, f.first_mirrored_us);
    auto verdict = [&](double seconds) { return seconds >= 0 && seconds <= target ? "met" : "MISSED"; };
    bool met = leading >= 0 && leading <= target && (c.fault != Fault::sigstop || c.stood_by) &&
               (c.fault != Fault::sigterm || c.exit_code == 0);
    all_met = all_met && met;
    std::printf("  ttl %d s, %s of the leader %s -> %s leads (epoch %lld -> %lld); target <= %.0f s\n", c.ttl,
                fault_name(c.fault), c.old_leader.c_str(), c.new_leader.c_str(), static_cast<long long>(c.epoch_before),
                static_cast<long long>(c.epoch_after), target);
    detail(format("  fault -> standby leading (its log): %.3f s (%s); its epoch seen in etcd_sync_leader %.3f s", leading,
                  verdict(leading), seconds_between(c.fault_us, c.seen_us)));
    detail(format("  fault -> first row inserted after the fault applied: %.3f s (%s); leading -> %.3f s", outbox,
                  verdict(outbox), seconds_between(c.leading_us, f.first_applied_us)));
    detail(format("  fault -> first revision committed after the fault mirrored: %.3f s (%s); leading -> %.3f s", mirror,
                  verdict(mirror), seconds_between(c.leading_us, f.first_mirrored_us)));
    std::string statuses;
    for (const auto& [status, n] : f.in_flight_statuses) statuses += format(" %s:%lld", status.c_str(), static_cast<long long>(n));
    detail(format("  rows inserted before the outbox applied again: %lld, commit -> applied p50 %.3f s, max %.3f s; rows "
                  "unapplied at the fault: %lld (%s), settled by fault + %.3f s; puts answered -> mirrored max %.3f s",
                  static_cast<long long>(f.outage_rows), f.outage_wait_ms.p50 / 1e3, f.outage_wait_ms.max / 1e3,
                  static_cast<long long>(f.in_flight), statuses.empty() ? "none" : statuses.substr(1).c_str(),
                  f.in_flight > 0 ? seconds_between(c.fault_us, f.in_flight_settled_us) : 0.0, f.put_mirror_ms.max / 1e3));
    if (c.fault == Fault::sigterm)
      detail(c.exit_code ? format("  the old leader exited with code %d", *c.exit_code) : "  the old leader DID NOT EXIT");
    if (c.fault == Fault::sigstop)
      detail(format("  SIGCONT at fault + %.3f s; the old leader %s %.3f s later: %s",
                    seconds_between(c.fault_us, c.cont_us), c.stood_by ? "stood by" : "DID NOT STAND BY within",
                    seconds_between(c.cont_us, c.standby_us), c.why.c_str()));
    detail("  " + c.machine);
    summary += format("%sttl %d %s %.2f s (<= %.0f: %s)", summary.empty() ? "" : "; ", c.ttl, fault_name(c.fault), leading,
                      target, met ? "met" : "MISSED");
  }
  const bool applied_once = outcomes.applied_once(static_cast<std::int64_t>(load.rows().size()), drained);
  detail("load average after: " + load_average());
  return {"i takeover", "standby leading after " + summary, all_met && applied_once && drained};
}

}  // namespace etcd_sync::bench
