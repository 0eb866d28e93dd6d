#include "test/chaos/faults.hpp"

#include <csignal>
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
  static const std::vector<FaultKind> kinds = {FaultKind::service_kill9, FaultKind::service_term,
                                               FaultKind::service_stop,  FaultKind::etcd_restart,
                                               FaultKind::etcd_leader_kill9, FaultKind::pg_restart,
                                               FaultKind::pg_kill9};
  return kinds;
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
  }
  return "?";
}

std::vector<FaultKind> parse_fault_kinds(const std::string& text) {
  if (text == "all") return all_fault_kinds();
  std::vector<FaultKind> kinds;
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
    : deployment_(deployment), kinds_(std::move(kinds)), random_(seed), log_(log) {}

void FaultInjector::finding(std::string message) {
  log_.line("FINDING: " + message);
  findings_.push_back({log_.elapsed(), std::move(message)});
}

void FaultInjector::watch_instances() {
  for (std::size_t i = 0; i < deployment_.instances.size(); ++i) {
    auto& instance = *deployment_.instances[i];
    if (instance.running()) continue;
    finding("etcd-sync instance " + std::to_string(i) + " exited on its own with code " +
            std::to_string(instance.exit_code().value_or(-1)) + "; restarting it");
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
      finding("etcd-sync instance " + std::to_string(i) + " exited with " + std::to_string(code) +
              " on the final SIGTERM (expected 0)");
  }
}

void FaultInjector::pause(milliseconds duration, bool watch) {
  const auto until = steady_clock::now() + duration;
  while (steady_clock::now() < until) {
    if (watch) watch_instances();
    std::this_thread::sleep_for(std::min<steady_clock::duration>(milliseconds(100), until - steady_clock::now()));
  }
}

std::size_t FaultInjector::pick_instance() {
  return static_cast<std::size_t>(random_.between(0, static_cast<std::int64_t>(deployment_.instances.size()) - 1));
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
      const std::size_t i = pick_instance();
      auto& instance = *deployment_.instances[i];
      log_.line(title + " of instance " + std::to_string(i) + " (pid " + std::to_string(instance.pid()) + ")");
      instance.kill9();
      deployment_.start_instance(i);
      log_.line(title + " done: restarted as pid " + std::to_string(instance.pid()));
      break;
    }
    case FaultKind::service_term: {
      const std::size_t i = pick_instance();
      auto& instance = *deployment_.instances[i];
      log_.line(title + " of instance " + std::to_string(i) + " (pid " + std::to_string(instance.pid()) + ")");
      const auto sent = steady_clock::now();
      const int code = instance.terminate(std::chrono::seconds(15));
      const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - sent);
      if (code != 0)
        finding("etcd-sync instance " + std::to_string(i) + " exited with " + std::to_string(code) + " after SIGTERM (" +
                ms(took) + "; expected 0)");
      deployment_.start_instance(i);
      log_.line(title + " done: exited " + std::to_string(code) + " after " + ms(took) + ", restarted as pid " +
                std::to_string(instance.pid()));
      break;
    }
    case FaultKind::service_stop: {
      const std::size_t i = pick_instance();
      auto& instance = *deployment_.instances[i];
      const milliseconds stopped = seconds_between(random_, 0.2, 3.0);
      log_.line(title + " of instance " + std::to_string(i) + " (pid " + std::to_string(instance.pid()) + ") for " +
                ms(stopped));
      instance.signal(SIGSTOP);
      std::this_thread::sleep_for(stopped);
      instance.signal(SIGCONT);
      log_.line(title + " done: SIGCONT");
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

std::string FaultInjector::summary() const {
  std::string out;
  for (const FaultKind kind : all_fault_kinds()) {
    const auto it = injected_.find(kind);
    if (it == injected_.end()) continue;
    out += (out.empty() ? "" : ", ") + std::string(name(kind)) + " " + std::to_string(it->second);
  }
  return out.empty() ? "none" : out;
}

}  // namespace etcd_sync::chaos
