// The faults a run injects, at random moments from the run's seed, one at a time with a pause
// for progress between them. Each fault restores what it broke before it returns (a restart, a
// SIGCONT), so the next one starts from a whole deployment.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/deployment.hpp"
#include "test/chaos/random.hpp"

namespace etcd_sync::chaos {

enum class FaultKind {
  service_kill9,      ///< kill -9 an etcd-sync instance, restart it
  service_term,       ///< SIGTERM an instance (it must exit 0), restart it
  service_stop,       ///< SIGSTOP an instance for 0.2-3 s, then SIGCONT
  etcd_restart,       ///< stop one etcd member (SIGTERM), 0-2 s down, start it
  etcd_leader_kill9,  ///< kill -9 the etcd leader member, 1-4 s down, start it
  pg_restart,         ///< PostgreSQL fast shutdown, 0-1.5 s down, start
  pg_kill9,           ///< PostgreSQL crash (postmaster and backends SIGKILLed), 0-1.5 s down, start
};

/// Every kind, in the order of the list above.
const std::vector<FaultKind>& all_fault_kinds();
/// The kind's command-line name, e.g. "service-kill9".
std::string_view name(FaultKind kind);
/// Parses "kind,kind,..." ("all" for every kind, "none" for none); throws std::invalid_argument
/// naming an unknown kind.
std::vector<FaultKind> parse_fault_kinds(const std::string& text);
/// "kind,kind,..." (the inverse of parse_fault_kinds).
std::string join_fault_kinds(const std::vector<FaultKind>& kinds);

/// Something the instances did that the contract rules out: an exit on their own, or an unclean
/// exit on SIGTERM. Reported with the checker's violations.
struct ServiceFinding {
  double at_seconds = 0;
  std::string message;
};

class FaultInjector {
 public:
  FaultInjector(Deployment& deployment, std::vector<FaultKind> kinds, std::uint64_t seed, ChaosLog& log);

  /// Injects faults until `end`, a random 1.5-4 s apart; in between it watches the instances and
  /// restarts one that exited on its own (recording a finding). Returns once `end` has passed and
  /// the last fault is undone.
  void run_until(std::chrono::steady_clock::time_point end);
  /// Restarts every instance that is not running (recording a finding for each that exited on
  /// its own), for the settle step.
  void revive_instances();
  /// SIGTERMs every instance and records a finding for each that does not exit 0 within 15 s.
  void terminate_instances();

  const std::vector<ServiceFinding>& findings() const { return findings_; }
  /// "service-kill9 2, pg-restart 1, ..." (faults injected per kind).
  std::string summary() const;

 private:
  void inject(FaultKind kind);
  void watch_instances();
  /// Sleeps `duration`, with `watch` also restarting instances that exited on their own (not
  /// while a server is down: an instance that starts then may rightly give up, exit code 2).
  void pause(std::chrono::milliseconds duration, bool watch);
  void finding(std::string message);
  std::size_t pick_instance();

  Deployment& deployment_;
  std::vector<FaultKind> kinds_;
  Random random_;
  ChaosLog& log_;
  std::map<FaultKind, int> injected_;
  int number_ = 0;
  std::vector<ServiceFinding> findings_;
};

}  // namespace etcd_sync::chaos
