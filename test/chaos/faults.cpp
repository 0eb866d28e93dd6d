#include "test/chaos/faults.hpp"

#include "adapters/errors.hpp"
#include "test/chaos/ha.hpp"
#include "test/support/etcd_loop.hpp"
#include "test/support/files.hpp"
#include "test/support/netns.hpp"
#include "test/support/pg_client.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace etcd_sync::chaos {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

milliseconds seconds_between(Random& random, double lo, double hi) {
  return milliseconds(static_cast<std::int64_t>(1000 * random.uniform(lo, hi)));
}

std::string ms(milliseconds duration) { return std::to_string(duration.count()) + " ms"; }

}  // namespace

const std::vector<FaultKind>& all_fault_kinds() {
  static const std::vector<FaultKind> kinds = {
      FaultKind::service_kill9,     FaultKind::service_term, FaultKind::service_stop,
      FaultKind::etcd_restart,      FaultKind::etcd_leader_kill9, FaultKind::pg_restart,
      FaultKind::pg_kill9,          FaultKind::leader_stop,  FaultKind::election_key_delete,
      FaultKind::epoch_bump,        FaultKind::rolling_restart, FaultKind::cut_etcd,
      FaultKind::cut_postgres,      FaultKind::cut_both,     FaultKind::lossy,
      FaultKind::etcd_member_stop};
  return kinds;
}

bool is_network_fault(FaultKind kind) {
  return kind == FaultKind::cut_etcd || kind == FaultKind::cut_postgres || kind == FaultKind::cut_both ||
         kind == FaultKind::lossy || kind == FaultKind::etcd_member_stop;
}

bool is_ha_fault(FaultKind kind) {
  return kind == FaultKind::leader_stop || kind == FaultKind::election_key_delete || kind == FaultKind::epoch_bump ||
         kind == FaultKind::rolling_restart;
}

std::string_view name(FaultKind kind) {
  switch (kind) {
    case FaultKind::service_kill9: return "service-kill9";
    case FaultKind::service_term: return "service-term";
    case FaultKind::service_stop: return "service-stop";
    case FaultKind::etcd_restart: return "etcd-restart";
    case FaultKind::etcd_leader_kill9: return "etcd-leader-kill9";
    case FaultKind::pg_restart: return "pg-restart";
    case FaultKind::pg_kill9: return "pg-kill9";
    case FaultKind::leader_stop: return "leader-stop";
    case FaultKind::election_key_delete: return "election-key-delete";
    case FaultKind::epoch_bump: return "epoch-bump";
    case FaultKind::rolling_restart: return "rolling-restart";
    case FaultKind::cut_etcd: return "cut-etcd";
    case FaultKind::cut_postgres: return "cut-postgres";
    case FaultKind::cut_both: return "cut-both";
    case FaultKind::lossy: return "lossy";
    case FaultKind::etcd_member_stop: return "etcd-member-stop";
  }
  return "?";
}

std::vector<FaultKind> parse_fault_kinds(const std::string& text, std::size_t instances, bool network) {
  std::vector<FaultKind> kinds;
  if (text == "all") {
    for (const FaultKind kind : all_fault_kinds())
      if ((instances > 1 || !is_ha_fault(kind)) && (network || !is_network_fault(kind))) kinds.push_back(kind);
    return kinds;
  }
  if (text == "none" || text.empty()) return kinds;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    bool known = false;
    for (const FaultKind kind : all_fault_kinds()) {
      if (item != name(kind)) continue;
      known = true;
      if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
    }
    if (!known) {
      std::string names;
      for (const FaultKind kind : all_fault_kinds()) names += " " + std::string(name(kind));
      throw std::invalid_argument("unknown fault kind \"" + item + "\" (known:" + names + ", or all, none)");
    }
  }
  return kinds;
}

std::string join_fault_kinds(const std::vector<FaultKind>& kinds) {
  if (kinds.empty()) return "none";
  std::string out;
  for (const FaultKind kind : kinds) out += (out.empty() ? "" : ",") + std::string(name(kind));
  return out;
}

FaultInjector::FaultInjector(Deployment& deployment, std::vector<FaultKind> kinds, std::uint64_t seed, ChaosLog& log)
    : deployment_(deployment), kinds_(std::move(kinds)), random_(seed), log_(log), etcd_(ha_etcd_client(deployment)) {}

FaultInjector::~FaultInjector() = default;

milliseconds FaultInjector::ttl() const { return std::chrono::seconds(deployment_.settings().ha_ttl_seconds); }

void FaultInjector::finding(std::string message) {
  log_.line("FINDING: " + message);
  findings_.push_back({log_.elapsed(), std::move(message)});
}

void FaultInjector::watch_instances() {
  for (std::size_t i = 0; i < deployment_.instances.size(); ++i) {
    auto& instance = *deployment_.instances[i];
    if (instance.running()) continue;
    finding("etcd-sync " + deployment_.describe_instance(i) + " exited on its own with code " +
            std::to_string(instance.exit_code().value_or(-1)) + " (its log: " + instance.log_path().filename().string() +
            "); restarting it");
    deployment_.start_instance(i);
  }
}

void FaultInjector::revive_instances() { watch_instances(); }

void FaultInjector::terminate_instances() {
  for (std::size_t i = 0; i < deployment_.instances.size(); ++i) {
    auto& instance = *deployment_.instances[i];
    const bool was_running = instance.running();
    const int code = instance.terminate(std::chrono::seconds(15));
    if (was_running && code != 0)
      finding("etcd-sync " + deployment_.describe_instance(i) + " exited with " + std::to_string(code) +
              " on the final SIGTERM (expected 0; its log: " + instance.log_path().filename().string() + ")");
  }
}

void FaultInjector::pause(milliseconds duration, bool watch) {
  const auto until = steady_clock::now() + duration;
  while (steady_clock::now() < until) {
    if (watch) watch_instances();
    std::this_thread::sleep_for(std::min<steady_clock::duration>(milliseconds(100), until - steady_clock::now()));
  }
}

FaultInjector::Target FaultInjector::pick_instance(bool leader_only) {
  const std::size_t count = deployment_.instances.size();
  const auto leader = find_leader(deployment_, *etcd_);
  Target target;
  if (leader) {
    target.epoch = leader_epoch(deployment_).value_or(0);
    target.key = leader->key;
    target.key_revision = leader->epoch;
  }
  const bool hit_leader = leader && (leader_only || count == 1 || random_.chance(0.6));
  if (hit_leader) {
    target.index = leader->index;
    target.leader = true;
    return target;
  }
  if (leader && count > 1) {
    // One of the standbys.
    const auto pick = static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(count) - 2));
    target.index = pick < leader->index ? pick : pick + 1;
    target.key.clear();
    target.key_revision = 0;
    return target;
  }
  target.index = static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(count) - 1));
  target.key.clear();
  target.key_revision = 0;
  return target;
}

std::string FaultInjector::describe(const Target& target) {
  return deployment_.describe_instance(target.index) +
         (target.leader ? " [leader, epoch " + std::to_string(target.epoch) + "]" : std::string(" [standby]"));
}

bool FaultInjector::await_log(std::size_t index, const std::vector<std::string>& needles, milliseconds deadline) {
  auto& instance = *deployment_.instances.at(index);
  const auto until = steady_clock::now() + deadline;
  while (true) {
    const std::string text = instance.log_since_mark();
    for (const auto& needle : needles)
      if (text.find(needle) != std::string::npos) return true;
    if (steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(milliseconds(50));
  }
}

std::string FaultInjector::peer_unreachable_said(std::size_t index) {
  const bool said = deployment_.instances.at(index)->log_since_mark().find("peer unreachable") != std::string::npos;
  return deployment_.describe_instance(index) + (said ? " logged" : " did not log") + " a peer unreachable";
}

std::optional<milliseconds> FaultInjector::poll_takeover(std::int64_t old_epoch, steady_clock::time_point since,
                                                        steady_clock::time_point until) {
  while (true) {
    const auto epoch = leader_epoch(deployment_);
    if (epoch && *epoch > old_epoch) return std::chrono::duration_cast<milliseconds>(steady_clock::now() - since);
    if (steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(50));
  }
}

void FaultInjector::record_takeover(FaultKind kind, std::int64_t old_epoch, milliseconds took, milliseconds target) {
  const auto epoch = leader_epoch(deployment_);
  const auto leader = find_leader(deployment_, *etcd_);
  const std::string who = leader ? deployment_.describe_instance(leader->index) : std::string("an instance");
  log_.line("takeover: " + who + " leads, epoch " + (epoch ? std::to_string(*epoch) : std::string("?")) + " (was " +
            std::to_string(old_epoch) + "), " + ms(took) + " after the fault");
  takeovers_[kind].push_back(took);
  if (took > target) {
    char at[32];
    std::snprintf(at, sizeof at, "%.1f", log_.elapsed());
    slow_takeovers_.push_back(std::string(name(kind)) + " at " + at + " s: " + ms(took) + " (target " + ms(target) + ")");
  }
}

void FaultInjector::await_takeover(FaultKind kind, std::int64_t old_epoch, steady_clock::time_point since,
                                   milliseconds target) {
  const auto deadline = since + ttl() + std::chrono::seconds(10);
  std::optional<milliseconds> took;
  while (!took && steady_clock::now() < deadline) {
    took = poll_takeover(old_epoch, since, std::min(deadline, steady_clock::now() + milliseconds(500)));
    watch_instances();
  }
  if (took) {
    record_takeover(kind, old_epoch, *took, target);
    return;
  }
  const auto epoch = leader_epoch(deployment_);
  finding(std::string(name(kind)) + ": no instance took over: etcd_sync_leader holds epoch " +
          (epoch ? std::to_string(*epoch) : std::string("(none, or PostgreSQL silent)")) + " " +
          ms(std::chrono::duration_cast<milliseconds>(steady_clock::now() - since)) + " after the fault (epoch before: " +
          std::to_string(old_epoch) + ")");
}

int FaultInjector::terminate_watching(std::size_t index, bool leader, std::int64_t old_epoch,
                                      std::optional<milliseconds>& took, milliseconds& exited_after) {
  auto& instance = *deployment_.instances.at(index);
  const auto sent = steady_clock::now();
  const auto deadline = sent + std::chrono::seconds(15);
  instance.signal(SIGTERM);
  std::optional<int> code;
  while (!code && steady_clock::now() < deadline) {
    if (leader && !took) {
      const auto epoch = leader_epoch(deployment_);
      if (epoch && *epoch > old_epoch) took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - sent);
    }
    code = instance.wait_exit(milliseconds(50));
  }
  exited_after = std::chrono::duration_cast<milliseconds>(steady_clock::now() - sent);
  if (!code) {
    instance.kill9();
    return -SIGKILL;
  }
  return *code;
}

void FaultInjector::run_until(steady_clock::time_point end) {
  if (kinds_.empty()) {
    pause(std::chrono::duration_cast<milliseconds>(end - steady_clock::now()), true);
    return;
  }
  while (true) {
    const milliseconds gap = seconds_between(random_, 1.5, 4.0);
    const FaultKind kind = random_.pick(kinds_);
    if (steady_clock::now() + gap >= end) {
      pause(std::chrono::duration_cast<milliseconds>(end - steady_clock::now()), true);
      return;
    }
    pause(gap, true);
    inject(kind);
  }
}

void FaultInjector::inject(FaultKind kind) {
  ++injected_[kind];
  const std::string title = "fault " + std::to_string(++number_) + ": " + std::string(name(kind));
  auto& etcd = deployment_.etcd;
  auto& postgres = deployment_.postgres;
  switch (kind) {
    case FaultKind::service_kill9: {
      const Target target = pick_instance();
      auto& instance = *deployment_.instances[target.index];
      log_.line(title + " of " + describe(target));
      const auto killed = steady_clock::now();
      instance.kill9();
      deployment_.start_instance(target.index);
      log_.line(title + " done: restarted as pid " + std::to_string(instance.pid()));
      if (target.leader) await_takeover(kind, target.epoch, killed, ttl() + std::chrono::seconds(2));
      break;
    }
    case FaultKind::service_term: {
      const Target target = pick_instance();
      auto& instance = *deployment_.instances[target.index];
      log_.line(title + " of " + describe(target));
      const bool several = deployment_.instances.size() > 1;
      std::optional<milliseconds> took;
      milliseconds exited_after{0};
      const auto sent = steady_clock::now();
      const int code = terminate_watching(target.index, target.leader && several, target.epoch, took, exited_after);
      if (code != 0)
        finding(deployment_.describe_instance(target.index) + " exited with " + std::to_string(code) + " after SIGTERM (" +
                ms(exited_after) + "; expected 0; its log: " + instance.log_path().filename().string() + ")");
      if (target.leader && several && !took) {
        // Not yet while it drained: a standby takes over now.
        took = poll_takeover(target.epoch, sent, steady_clock::now() + std::chrono::seconds(10) + ttl());
        if (!took) finding(title + ": no instance took over within ttl + 10 s after the leader exited");
      }
      deployment_.start_instance(target.index);
      log_.line(title + " done: exited " + std::to_string(code) + " after " + ms(exited_after) + ", restarted as pid " +
                std::to_string(instance.pid()));
      if (target.leader && took) record_takeover(kind, target.epoch, *took, std::chrono::seconds(2));
      if (target.leader && !several) await_takeover(kind, target.epoch, sent, std::chrono::seconds(10));
      break;
    }
    case FaultKind::service_stop: {
      const Target target = pick_instance();
      auto& instance = *deployment_.instances[target.index];
      const milliseconds stopped = seconds_between(random_, 0.2, 3.0);
      log_.line(title + " of " + describe(target) + " for " + ms(stopped));
      instance.signal(SIGSTOP);
      std::this_thread::sleep_for(stopped);
      instance.signal(SIGCONT);
      log_.line(title + " done: SIGCONT");
      break;
    }
    case FaultKind::leader_stop: {
      const Target target = pick_instance(true);
      if (!target.leader) {
        skipped(kind, title + ": no leader found (etcd and etcd_sync_service silent)");
        break;
      }
      auto& instance = *deployment_.instances[target.index];
      const bool several = deployment_.instances.size() > 1;
      const milliseconds stopped = ttl() + seconds_between(random_, 1.0, 3.0);
      log_.line(title + " of " + describe(target) + " for " + ms(stopped) + " (ttl " + ms(ttl()) + ")");
      instance.mark_log();
      instance.signal(SIGSTOP);
      const auto at = steady_clock::now();
      // Another instance takes over while it is frozen.
      std::optional<milliseconds> took = several ? poll_takeover(target.epoch, at, at + stopped) : std::nullopt;
      pause(std::chrono::duration_cast<milliseconds>(at + stopped - steady_clock::now()), false);
      instance.signal(SIGCONT);
      log_.line(title + " done: SIGCONT after " + ms(std::chrono::duration_cast<milliseconds>(steady_clock::now() - at)));
      if (took) {
        record_takeover(kind, target.epoch, *took, ttl() + std::chrono::seconds(2));
      } else {
        await_takeover(kind, target.epoch, at, several ? ttl() + std::chrono::seconds(2) : stopped + std::chrono::seconds(5));
      }
      // Back, it must notice that it no longer leads (its lease is gone; a write of it is fenced)
      // and campaign again.
      if (!await_log(target.index, {"\"msg\":\"etcd lease lost\"", "\"msg\":\"fenced:", "\"to\":\"demoting\""},
                     std::chrono::seconds(10))) {
        finding(title + ": " + deployment_.describe_instance(target.index) + ", frozen " + ms(stopped) +
                " while it led epoch " + std::to_string(target.epoch) +
                ", logged neither a lost lease, nor a fenced write, nor demoting within 10 s of SIGCONT");
      } else if (!await_log(target.index, {several ? "\"to\":\"standby\"" : "\"msg\":\"leading\""},
                            std::chrono::seconds(15))) {
        finding(title + ": " + deployment_.describe_instance(target.index) + " did not " +
                (several ? "stand by" : "lead") + " again within 15 s of stepping down");
      }
      break;
    }
    case FaultKind::election_key_delete: {
      const Target target = pick_instance(true);
      if (!target.leader || target.key.empty()) {
        skipped(kind, title + ": no leader's campaign key found in etcd");
        break;
      }
      auto& instance = *deployment_.instances[target.index];
      const InstanceLogFacts before = read_instance_log(Deployment::instance_id(target.index), instance.log_text());
      const bool led = std::any_of(before.leads.begin(), before.leads.end(),
                                   [&](const LeadRecord& lead) { return lead.epoch == target.key_revision; });
      instance.mark_log();
      etcdserverpb::DeleteRangeRequest request;
      request.set_key(target.key);
      const auto at = steady_clock::now();
      std::int64_t deleted = 0, revision = 0;
      try {
        const auto response = etcd_->run(etcd_->etcd().delete_range(request));
        deleted = response.deleted();
        revision = response.header().revision();
      } catch (const SyncError& error) {
        skipped(kind, title + ": the delete of " + target.key + " failed (" + error.what() + ")");
        break;
      }
      log_.line(title + ": deleted " + target.key + " (create_revision " + std::to_string(target.key_revision) + ") of " +
                describe(target) + " at revision " + std::to_string(revision) + (deleted == 1 ? "" : " (it was gone already)"));
      if (deleted != 1) break;
      if (led && !await_log(target.index, {"\"to\":\"demoting\""}, std::chrono::seconds(10)))
        finding(title + ": " + deployment_.describe_instance(target.index) + " led epoch " +
                std::to_string(target.key_revision) + ", but did not step down within 10 s of its campaign key's delete");
      await_takeover(kind, target.epoch, at, std::chrono::seconds(2));
      break;
    }
    case FaultKind::epoch_bump: {
      // Raised to a value no leader's key has yet, but below every key etcd creates from now on:
      // the current leader is fenced (its epoch is no longer the row's), and the next leader's
      // epoch, a fresh create_revision, is greater, so its takeover ("only if greater") succeeds.
      // A bump past etcd's future revisions (say + 1000000) would fence every instance until etcd
      // got there: nobody could lead, which tests nothing but the operator.
      const Target target = pick_instance(true);
      const bool to_revision = random_.chance(0.5);
      std::int64_t floor = 0;
      if (to_revision) {
        try {
          etcdserverpb::RangeRequest request;
          request.set_key(std::string(1, '\0'));
          request.set_range_end(std::string(1, '\0'));
          request.set_count_only(true);
          floor = etcd_->run(etcd_->etcd().range(request)).header().revision();
        } catch (const SyncError&) {
        }
      }
      if (target.leader) deployment_.instances[target.index]->mark_log();
      std::optional<std::int64_t> bumped;
      std::string holder;
      try {
        testing::PgClient db(deployment_.conninfo() + " connect_timeout=2");
        db.exec("SET statement_timeout = '10s'");
        const auto rows = db.exec_params(
            "UPDATE etcd_sync_leader SET epoch = greatest(epoch + 1, $1::bigint) RETURNING epoch, instance_id",
            {std::to_string(floor)});
        if (!rows.empty()) {
          bumped = std::stoll(*rows[0][0]);
          holder = *rows[0][1];
        }
      } catch (const testing::PgError& error) {
        // PostgreSQL runs (one fault at a time): an UPDATE that waits 10 s for the epoch row's
        // lock means a leader's transaction held its FOR SHARE lock that long.
        finding(title + ": the UPDATE of etcd_sync_leader failed: " + error.what());
        break;
      }
      const auto at = steady_clock::now();
      if (!bumped) {
        skipped(kind, title + ": etcd_sync_leader has no row");
        break;
      }
      log_.line(title + ": etcd_sync_leader's epoch (" + holder + ") raised by hand to " + std::to_string(*bumped) +
                (to_revision ? " (etcd's revision " + std::to_string(floor) + ")" : std::string(" (epoch + 1)")) +
                (target.leader ? "; leader " + describe(target) : std::string("; no leader found")));
      if (target.leader && Deployment::instance_id(target.index) == holder &&
          !await_log(target.index, {"\"msg\":\"fenced:", "\"to\":\"demoting\""}, std::chrono::seconds(10)))
        finding(title + ": " + deployment_.describe_instance(target.index) + ", whose epoch " + std::to_string(target.epoch) +
                " was superseded by hand, was not fenced (logged no fenced write and did not step down) within 10 s");
      await_takeover(kind, *bumped, at, ttl() + std::chrono::seconds(2));
      break;
    }
    case FaultKind::rolling_restart: {
      const std::size_t count = deployment_.instances.size();
      const auto first = static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(count) - 1));
      log_.line(title + " of " + std::to_string(count) + " instance(s), from instance " + std::to_string(first));
      for (std::size_t k = 0; k < count; ++k) {
        const std::size_t i = (first + k) % count;
        const auto leader = find_leader(deployment_, *etcd_);
        const bool was_leader = leader && leader->index == i;
        const std::int64_t epoch = leader_epoch(deployment_).value_or(0);
        auto& instance = *deployment_.instances[i];
        log_.line(title + ": SIGTERM " + deployment_.describe_instance(i) +
                  (was_leader ? " [leader, epoch " + std::to_string(epoch) + "]" : std::string(" [standby]")));
        std::optional<milliseconds> took;
        milliseconds exited_after{0};
        const auto sent = steady_clock::now();
        const int code = terminate_watching(i, was_leader && count > 1, epoch, took, exited_after);
        if (code != 0)
          finding(title + ": " + deployment_.describe_instance(i) + " exited with " + std::to_string(code) +
                  " after SIGTERM (" + ms(exited_after) + "; expected 0; its log: " + instance.log_path().filename().string() + ")");
        if (was_leader && count > 1 && !took) took = poll_takeover(epoch, sent, steady_clock::now() + ttl() + std::chrono::seconds(10));
        deployment_.start_instance(i);
        if (!deployment_.wait_campaigned(i, std::chrono::seconds(30)))
          finding(title + ": " + deployment_.describe_instance(i) + " did not campaign (stand by or lead) within 30 s of its start");
        log_.line(title + ": " + deployment_.describe_instance(i) + " is back (exited " + std::to_string(code) + " after " +
                  ms(exited_after) + ")");
        if (was_leader && count > 1) {
          if (took) {
            record_takeover(kind, epoch, *took, std::chrono::seconds(2));
          } else {
            finding(title + ": no instance took over within ttl + 10 s after the leader " +
                    deployment_.describe_instance(i) + " exited");
          }
        } else if (was_leader) {
          await_takeover(kind, epoch, sent, std::chrono::seconds(10));
        }
      }
      log_.line(title + " done");
      break;
    }
    case FaultKind::etcd_restart: {
      const auto member = static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(etcd.size()) - 1));
      const milliseconds down = seconds_between(random_, 0.0, 2.0);
      log_.line(title + " of member " + std::to_string(member) + " (" + etcd.member(member).endpoint() + "), down for " +
                ms(down));
      etcd.member(member).stop();
      pause(down, false);
      etcd.member(member).start();
      log_.line(title + " done: member " + std::to_string(member) + " serving again");
      break;
    }
    case FaultKind::etcd_leader_kill9: {
      const milliseconds down = seconds_between(random_, 1.0, 4.0);
      const std::size_t leader = etcd.wait_for_leader(std::chrono::seconds(10));
      log_.line(title + ": member " + std::to_string(leader) + " (" + etcd.member(leader).endpoint() + ") leads; down for " +
                ms(down));
      etcd.member(leader).kill9();
      const auto killed = steady_clock::now();
      if (etcd.size() > 1) {
        const std::size_t next = etcd.wait_for_leader(std::chrono::seconds(15));
        log_.line(title + ": member " + std::to_string(next) + " leads after " +
                  ms(std::chrono::duration_cast<milliseconds>(steady_clock::now() - killed)));
      }
      pause(std::max(milliseconds(0), down - std::chrono::duration_cast<milliseconds>(steady_clock::now() - killed)), false);
      etcd.member(leader).start();
      log_.line(title + " done: member " + std::to_string(leader) + " serving again");
      break;
    }
    case FaultKind::cut_etcd:
    case FaultKind::cut_postgres:
    case FaultKind::cut_both:
      cut(kind, title);
      break;
    case FaultKind::lossy: {
      const Target target = pick_instance();
      testing::IsolatedHost* host = deployment_.host(target.index);
      if (host == nullptr) {
        skipped(kind, title + ": the instances are not isolated");
        break;
      }
      const milliseconds lossy_for = seconds_between(random_, 2.0, 6.0);
      const std::uint64_t before = host->dropped_packets();
      log_.line(title + ": 30% of the packets of " + describe(target) + " dropped, both ways, for " + ms(lossy_for));
      deployment_.instances[target.index]->mark_log();
      host->lossy(30);
      pause(lossy_for, false);
      host->heal_all();
      log_.line(title + " done: healed; " + std::to_string(host->dropped_packets() - before) + " packets dropped; " +
                peer_unreachable_said(target.index));
      break;
    }
    case FaultKind::etcd_member_stop: {
      if (etcd.size() < 3) {
        skipped(kind, title + ": " + std::to_string(etcd.size()) + " etcd member(s): the others would have no quorum");
        break;
      }
      const Target target = pick_instance();
      const auto used = etcd_members_used(target.index);
      const std::size_t member = used.empty()
                                     ? static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(etcd.size()) - 1))
                                     : random_.pick(used);
      const milliseconds stopped = seconds_between(random_, 2.0, 6.0);
      const pid_t pid = etcd.member(member).pid();
      log_.line(title + ": member " + std::to_string(member) + " (" + etcd.member(member).endpoint() + ", pid " +
                std::to_string(pid) + ")" +
                (used.empty() ? ", picked at random (no connection of " + describe(target) + " seen)"
                              : ", which " + describe(target) + " talks to") +
                ", SIGSTOPped for " + ms(stopped));
      deployment_.instances[target.index]->mark_log();
      ::kill(pid, SIGSTOP);
      pause(stopped, false);
      ::kill(pid, SIGCONT);
      log_.line(title + " done: member " + std::to_string(member) + " SIGCONTed; " + peer_unreachable_said(target.index));
      break;
    }
    case FaultKind::pg_restart:
    case FaultKind::pg_kill9: {
      const milliseconds down = seconds_between(random_, 0.0, 1.5);
      log_.line(title + " (port " + std::to_string(postgres.port()) + "), down for " + ms(down));
      if (kind == FaultKind::pg_restart) {
        postgres.stop();
      } else {
        postgres.kill9();
      }
      pause(down, false);
      postgres.start();
      log_.line(title + " done: PostgreSQL accepting connections again");
      break;
    }
  }
}

void FaultInjector::cut(FaultKind kind, const std::string& title) {
  const Target target = pick_instance();
  testing::IsolatedHost* host = deployment_.host(target.index);
  if (host == nullptr) {
    skipped(kind, title + ": the instances are not isolated");
    return;
  }
  auto& instance = *deployment_.instances[target.index];
  std::vector<int> ports;
  if (kind != FaultKind::cut_postgres) ports = deployment_.etcd_client_ports();
  if (kind != FaultKind::cut_etcd) ports.push_back(deployment_.postgres.port());
  const milliseconds cut_for = seconds_between(random_, 2.0, 8.0);
  // A leader cut off for longer than its ttl must be replaced (its lease expires, or it resigns for
  // want of PostgreSQL); 2 s more for noticing. A shorter cut may or may not depose it.
  const bool takeover_due = target.leader && cut_for > ttl() + std::chrono::seconds(2);
  const bool several = deployment_.instances.size() > 1;
  std::string port_list;
  for (const int port : ports) port_list += (port_list.empty() ? "" : ",") + std::to_string(port);
  log_.line(title + " of " + describe(target) + " from port(s) " + port_list + " for " + ms(cut_for) + " (ttl " +
            ms(ttl()) + ")");
  instance.mark_log();
  for (const int port : ports) host->cut(port);
  const auto at = steady_clock::now();
  // Another instance may take over while it is cut off.
  std::optional<milliseconds> took =
      target.leader && several ? poll_takeover(target.epoch, at, at + cut_for) : std::nullopt;
  pause(std::chrono::duration_cast<milliseconds>(at + cut_for - steady_clock::now()), false);
  host->heal_all();
  log_.line(title + " done: healed after " + ms(std::chrono::duration_cast<milliseconds>(steady_clock::now() - at)) +
            "; " + peer_unreachable_said(target.index));
  if (!target.leader) return;
  if (took) {
    record_takeover(kind, target.epoch, *took, ttl() + std::chrono::seconds(2));
  } else if (takeover_due) {
    await_takeover(kind, target.epoch, at, several ? ttl() + std::chrono::seconds(2) : cut_for + std::chrono::seconds(5));
  } else if (const auto late = poll_takeover(target.epoch, at, steady_clock::now() + std::chrono::seconds(2))) {
    // Not due, but the cut set it off (the leader resigned as the cut healed, say).
    record_takeover(kind, target.epoch, *late, ttl() + std::chrono::seconds(2));
  } else {
    log_.line(title + ": epoch " + std::to_string(target.epoch) + " still leads 2 s after the heal (the cut did not " +
              "outlast ttl + 2 s, so no takeover was due)");
  }
}

std::vector<std::size_t> FaultInjector::etcd_members_used(std::size_t index) {
  auto& instance = *deployment_.instances.at(index);
  if (deployment_.host(index) == nullptr || !instance.running()) return {};
  const auto ports = deployment_.etcd_client_ports();
  std::vector<std::size_t> members;
  // The instance is alone in its network namespace: every established connection there is its own.
  // Lines: "sl local_address rem_address st ...", addresses as hex "ADDR:PORT", st 01 established.
  for (const char* table : {"tcp", "tcp6"}) {
    std::istringstream lines(testing::read_text_file("/proc/" + std::to_string(instance.pid()) + "/net/" + table));
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      if (!(fields >> slot >> local >> remote >> state) || state != "01") continue;
      const auto colon = remote.rfind(':');
      if (colon == std::string::npos) continue;
      const int port = static_cast<int>(std::strtol(remote.c_str() + colon + 1, nullptr, 16));
      for (std::size_t m = 0; m < ports.size(); ++m)
        if (ports[m] == port && std::find(members.begin(), members.end(), m) == members.end()) members.push_back(m);
    }
  }
  return members;
}

std::string FaultInjector::takeover_summary() const {
  std::string out;
  for (const FaultKind kind : all_fault_kinds()) {
    const auto it = takeovers_.find(kind);
    if (it == takeovers_.end() || it->second.empty()) continue;
    const auto [lo, hi] = std::minmax_element(it->second.begin(), it->second.end());
    char range[64];
    std::snprintf(range, sizeof range, "%.1f-%.1f s", lo->count() / 1000.0, hi->count() / 1000.0);
    out += (out.empty() ? "" : ", ") + std::string(name(kind)) + " " + std::to_string(it->second.size()) + " (" + range + ")";
  }
  return out.empty() ? "none" : out;
}

void FaultInjector::skipped(FaultKind kind, const std::string& why) {
  ++skipped_[kind];
  log_.line(why + "; skipped");
}

std::string FaultInjector::summary() const {
  std::string out;
  for (const FaultKind kind : all_fault_kinds()) {
    const auto it = injected_.find(kind);
    if (it == injected_.end()) continue;
    out += (out.empty() ? "" : ", ") + std::string(name(kind)) + " " + std::to_string(it->second);
    const auto skips = skipped_.find(kind);
    if (skips != skipped_.end()) out += " (" + std::to_string(skips->second) + " skipped)";
  }
  return out.empty() ? "none" : out;
}

}  // namespace etcd_sync::chaos
