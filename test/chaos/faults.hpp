// The faults a run injects, at random moments from the run's seed, one at a time with a pause
// for progress between them. Each fault restores what it broke before it returns (a restart, a
// SIGCONT), so the next one starts from a whole deployment. Faults aimed at an etcd-sync instance
// hit the current leader more often than a standby; after a fault that deposes the leader, the
// fault waits until another epoch leads (and records how long the takeover took).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/deployment.hpp"
#include "test/chaos/random.hpp"

namespace etcd_sync::testing {
class EtcdLoop;
}

namespace etcd_sync::chaos {

enum class FaultKind {
  service_kill9,      ///< kill -9 an etcd-sync instance, restart it
  service_term,       ///< SIGTERM an instance (it must exit 0), restart it
  service_stop,       ///< SIGSTOP an instance for 0.2-3 s, then SIGCONT
  etcd_restart,       ///< stop one etcd member (SIGTERM), 0-2 s down, start it
  etcd_leader_kill9,  ///< kill -9 the etcd leader member, 1-4 s down, start it
  pg_restart,         ///< PostgreSQL fast shutdown, 0-1.5 s down, start
  pg_kill9,           ///< PostgreSQL crash (postmaster and backends SIGKILLed), 0-1.5 s down, start
  // High availability (in "all" with --instances 2 or more):
  leader_stop,        ///< SIGSTOP the leader for ttl + 1-3 s, SIGCONT: it must say its lease is lost or it was fenced
  election_key_delete,  ///< delete the leader's campaign key in etcd: it must step down; another epoch leads
  epoch_bump,         ///< raise etcd_sync_leader.epoch by hand (to epoch + 1, or to etcd's revision): the leader is fenced
  rolling_restart,    ///< SIGTERM each instance in turn (exit 0), start it again, wait until it campaigns
  // Network (in "all" when the instances run in isolated hosts: the driver got its private network
  // namespace); each hits one instance, the leader 60% of the time:
  cut_etcd,           ///< drop the instance's packets to and from every etcd member for 2-8 s, then heal
  cut_postgres,       ///< the same for PostgreSQL
  cut_both,           ///< the same for etcd and PostgreSQL at once
  lossy,              ///< drop 30% of the instance's packets at random, both ways, for 2-6 s
  etcd_member_stop,   ///< SIGSTOP the etcd member the instance talks to for 2-6 s (3 members: the others keep quorum)
};

/// Every kind, in the order of the list above.
const std::vector<FaultKind>& all_fault_kinds();
/// Whether `kind` is one of the high-availability kinds (leader_stop to rolling_restart).
bool is_ha_fault(FaultKind kind);
/// Whether `kind` is one of the network kinds (cut_etcd and after): they need isolated instances.
bool is_network_fault(FaultKind kind);
/// The kind's command-line name, e.g. "service-kill9".
std::string_view name(FaultKind kind);
/// Parses "kind,kind,..." ("all" for every kind that fits `instances` and `network`: the
/// high-availability kinds only with 2 or more instances, the network kinds only when `network`
/// (isolated instances); "none" for none); throws std::invalid_argument naming an unknown kind. A
/// high-availability kind named explicitly also runs with one instance (which then leads again); a
/// network kind named explicitly is returned whatever `network` says (the caller drops it).
std::vector<FaultKind> parse_fault_kinds(const std::string& text, std::size_t instances = 1, bool network = false);
/// "kind,kind,..." (the inverse of parse_fault_kinds).
std::string join_fault_kinds(const std::vector<FaultKind>& kinds);

/// Something the instances must never do: an exit on their own, or an unclean exit on SIGTERM
/// (`start` runs until SIGINT or SIGTERM, then ends gracefully with exit 0: README, "Commands").
/// Reported with the checker's violations.
struct ServiceFinding {
  double at_seconds = 0;
  std::string message;
};

class FaultInjector {
 public:
  FaultInjector(Deployment& deployment, std::vector<FaultKind> kinds, std::uint64_t seed, ChaosLog& log);
  ~FaultInjector();

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
  /// "service-kill9 2, leader-stop 3 (1 skipped), ..." (faults injected per kind; skipped: found
  /// nothing to hit).
  std::string summary() const;
  /// "leader-stop 3 (1.9-4.2 s), service-term 2 (0.3-0.6 s)": takeovers per kind, from the fault
  /// to another epoch in etcd_sync_leader; "none" without any.
  std::string takeover_summary() const;
  /// The takeovers slower than their targets (2 s after SIGTERM, ttl + 2 s otherwise: README,
  /// "Several instances: one leader"), one line each. Timing on a shared machine: reported, not
  /// counted as findings.
  const std::vector<std::string>& slow_takeovers() const { return slow_takeovers_; }

 private:
  /// The instance a fault hits, and what was known of it when it was chosen.
  struct Target {
    std::size_t index = 0;
    bool leader = false;      ///< it owned the lowest campaign key (or, etcd silent, a leader row)
    std::int64_t epoch = 0;   ///< etcd_sync_leader's epoch before the fault (0: none)
    std::string key;          ///< its campaign key, when it leads and etcd told
    std::int64_t key_revision = 0;  ///< that key's create_revision
  };

  void inject(FaultKind kind);
  void watch_instances();
  /// Sleeps `duration`, with `watch` also restarting instances that exited on their own (not
  /// while a server is down: an instance that starts then may rightly give up, exit code 2).
  void pause(std::chrono::milliseconds duration, bool watch);
  void finding(std::string message);
  /// Counts a fault of `kind` that found nothing to hit (no leader known, say) and logs `why`.
  void skipped(FaultKind kind, const std::string& why);
  /// With several instances the leader (60%) or one of the standbys; `leader_only` always the leader
  /// when one is found.
  Target pick_instance(bool leader_only = false);
  /// "instance 1 (chaos-1, pid 4242) [leader, epoch 77]".
  std::string describe(const Target& target);
  /// Waits until etcd_sync_leader's epoch exceeds `old_epoch`; records the takeover (from `since`)
  /// under `kind`, or a finding after ttl + 10 s. `target`: the kind's takeover target (README,
  /// "Several instances: one leader").
  void await_takeover(FaultKind kind, std::int64_t old_epoch, std::chrono::steady_clock::time_point since,
                      std::chrono::milliseconds target);
  /// Polls etcd_sync_leader until its epoch exceeds `old_epoch` (the time since `since`) or `until`.
  std::optional<std::chrono::milliseconds> poll_takeover(std::int64_t old_epoch, std::chrono::steady_clock::time_point since,
                                                         std::chrono::steady_clock::time_point until);
  void record_takeover(FaultKind kind, std::int64_t old_epoch, std::chrono::milliseconds took,
                       std::chrono::milliseconds target);
  /// SIGTERMs instance `index` and waits up to 15 s for its exit (then SIGKILL: -SIGKILL), watching
  /// meanwhile, when it is the `leader`, for another epoch (`took`, from the SIGTERM). Returns the
  /// exit code.
  int terminate_watching(std::size_t index, bool leader, std::int64_t old_epoch,
                         std::optional<std::chrono::milliseconds>& took, std::chrono::milliseconds& exited_after);
  /// cut_etcd, cut_postgres and cut_both: cuts `target` off the servers for 2-8 s, then heals;
  /// when it led, another epoch must lead once the cut outlasted the ttl.
  void cut(FaultKind kind, const std::string& title);
  /// The etcd members (indices) instance `index` holds an established connection to now, read
  /// from its network namespace's /proc/<pid>/net/tcp{,6}; empty when unknown.
  std::vector<std::size_t> etcd_members_used(std::size_t index);
  /// "instance 1 (chaos-1, pid 4242) logged a peer unreachable" (or "did not log"), from its log
  /// since its mark: for chaos.log, not a check.
  std::string peer_unreachable_said(std::size_t index);
  /// Waits up to `deadline` until instance `index`'s log (since its mark) holds one of `needles`.
  bool await_log(std::size_t index, const std::vector<std::string>& needles, std::chrono::milliseconds deadline);
  std::chrono::milliseconds ttl() const;

  Deployment& deployment_;
  std::vector<FaultKind> kinds_;
  Random random_;
  ChaosLog& log_;
  std::unique_ptr<testing::EtcdLoop> etcd_;  ///< looks at the campaign keys, deletes the leader's
  std::map<FaultKind, int> injected_;
  std::map<FaultKind, int> skipped_;
  std::map<FaultKind, std::vector<std::chrono::milliseconds>> takeovers_;
  std::vector<std::string> slow_takeovers_;
  int number_ = 0;
  std::vector<ServiceFinding> findings_;
};

}  // namespace etcd_sync::chaos
