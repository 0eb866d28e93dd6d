// etcd-sync-chaos: the randomized fault suite's driver (README "Tests"; scripts/chaos runs it).
//
// One run: real etcd (a 3-member cluster by default) and PostgreSQL on loopback, --instances
// etcd-sync instances started from the build (one leads, the others stand by; as root each in an
// isolated host of the driver's private network namespace, test/support/netns.hpp), concurrent writers
// on both sides of ~30 shared keys for --seconds, faults at random moments (kill -9, SIGTERM and
// SIGSTOP of etcd-sync, the leader more often than a standby; etcd member restarts and leader
// kills; PostgreSQL restarts and crashes; with several instances also the leader frozen past its
// ttl, its campaign key deleted, the epoch row raised by hand, a rolling restart; with the private
// network namespace, an instance cut off from etcd, PostgreSQL or both, a lossy link, the etcd
// member it talks to frozen). Then it settles
// (writers stop, every server and etcd-sync runs, exactly one instance leads, no etcd_wal row
// pending, the mirror's checkpoint at etcd's revision), stops etcd-sync with SIGTERM and checks
// etcd's history against the tables, and the leadership record (checker.hpp).
//
// Every decision comes from --seed. Exit status: 0 when every check holds, 1 when one does not
// (the temp dir with every log is kept and named), 2 when the run itself could not be carried out.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>

#include "test/chaos/chaos_log.hpp"
#include "test/chaos/checker.hpp"
#include "test/chaos/deployment.hpp"
#include "test/chaos/evidence.hpp"
#include "test/chaos/faults.hpp"
#include "test/chaos/ha.hpp"
#include "test/chaos/random.hpp"
#include "test/chaos/writers.hpp"
#include "test/support/etcd_loop.hpp"
#include "test/support/netns.hpp"

namespace etcd_sync::chaos {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr const char* kMarkerPrefix = "/chaos-meta/del/";
constexpr int kWritersPerSide = 2;
constexpr std::size_t kExamplesShownPerKind = 3;

struct Options {
  std::uint64_t seed = 0;
  bool seed_given = false;
  int seconds = 30;
  std::string mode = "etcd_wins";
  std::size_t etcd_members = 3;
  std::size_t instances = 1;
  std::string faults = "all";
  double rate = 50;  // writes per second per side
  int keys = 30;
  double delete_share = 0.25;  // of the writes on each side
  std::string log_level = "debug";
  int settle_timeout = 120;
  bool keep = false;
};

/// The command line that replays this run.
std::string replay_command(const Options& options) {
  std::ostringstream out;
  out << "scripts/chaos --seed " << options.seed << " --seconds " << options.seconds << " --mode " << options.mode
      << " --etcd-members " << options.etcd_members;
  if (options.instances != 1) out << " --instances " << options.instances;
  if (options.faults != "all") out << " --faults " << options.faults;
  if (options.rate != Options{}.rate) out << " --rate " << options.rate;
  if (options.keys != Options{}.keys) out << " --keys " << options.keys;
  if (options.delete_share != Options{}.delete_share) out << " --delete-share " << options.delete_share;
  return out.str();
}

double seconds_since(steady_clock::time_point since) {
  return std::chrono::duration<double>(steady_clock::now() - since).count();
}

std::string fixed(double value, int decimals = 1) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

/// Waits until nothing is pending, the mirror's checkpoint has reached etcd's revision and exactly
/// one instance leads (ha_unsettled); logs where it stands every 10 s. Returns whether it got there
/// within `deadline`; `last` is the last look at who leads.
bool settle(Deployment& deployment, testing::EtcdLoop& etcd, ChaosLog& log, seconds deadline, HaSnapshot& last) {
  const auto began = steady_clock::now();
  auto next_report = began + seconds(10);
  while (true) {
    const std::int64_t pending = pending_rows(deployment);
    std::int64_t revision = -1;
    try {
      revision = etcd_revision(deployment);
    } catch (const std::exception&) {
    }
    const std::int64_t checkpoint = mirror_checkpoint(deployment);
    last = read_ha(deployment, etcd);
    const auto leadership = ha_unsettled(last, expected_instances(deployment));
    if (pending == 0 && revision > 0 && checkpoint >= revision && !leadership) return true;
    const auto now = steady_clock::now();
    const std::string where = std::to_string(pending) + " rows pending, checkpoint " + std::to_string(checkpoint) +
                              ", etcd revision " + std::to_string(revision) + ", leadership: " +
                              leadership.value_or("one leader");
    if (now - began >= deadline) {
      log.line("settle: gave up after " + std::to_string(deadline.count()) + " s: " + where);
      return false;
    }
    if (now >= next_report) {
      log.line("settle: " + where);
      next_report = now + seconds(10);
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
}

/// The fault kinds of --faults that this run can inject: without the private network namespace
/// (not root), the network kinds (those named, or all's) are left out, with one line saying why.
std::vector<FaultKind> injectable_kinds(const Options& options) {
  auto kinds = parse_fault_kinds(options.faults, options.instances, true);
  if (testing::in_private_network()) return kinds;
  std::vector<FaultKind> dropped;
  std::copy_if(kinds.begin(), kinds.end(), std::back_inserter(dropped), is_network_fault);
  std::erase_if(kinds, is_network_fault);
  if (!dropped.empty())
    std::cout << "chaos: network faults skipped (" << join_fault_kinds(dropped)
              << "): no private network namespace: " << testing::private_network_error() << std::endl;
  return kinds;
}

int run(const Options& options) {
  std::cout << "chaos: seed " << options.seed << std::endl;
  const auto began = steady_clock::now();
  ChaosLog log;
  DeploymentSettings settings;
  settings.mode = options.mode == "etcd_wins" ? ConflictMode::etcd_wins : ConflictMode::postgres_wins;
  settings.etcd_members = options.etcd_members;
  settings.instances = options.instances;
  settings.log_level = options.log_level;
  settings.isolate_instances = testing::in_private_network();
  const auto kinds = injectable_kinds(options);
  if (kinds.empty() && !parse_fault_kinds(options.faults, options.instances, true).empty()) {
    std::cout << "chaos: SKIPPED (seed " << options.seed << "): every fault kind asked for needs a private network namespace"
              << std::endl;
    return 0;
  }
  Deployment deployment(settings, log);
  log.tee_to(deployment.dir.path() / "chaos.log");
  log.line("seed " + std::to_string(options.seed) + ", mode " + options.mode + ", " +
           std::to_string(options.etcd_members) + " etcd members, " + std::to_string(options.instances) +
           " etcd-sync instance(s) ([ha] ttl " + std::to_string(settings.ha_ttl_seconds) + " s), " +
           std::to_string(options.seconds) +
           " s of writing, faults " + join_fault_kinds(kinds) + ", " + fixed(options.rate, 0) +
           " writes/s per side on " + std::to_string(options.keys) + " keys; files in " + deployment.dir.path().string());

  const auto fail_with_files = [&](const std::string& verdict) {
    deployment.dir.keep();
    std::string logs;
    for (std::size_t i = 0; i < deployment.instances.size(); ++i)
      logs += deployment.instances[i]->log_path().filename().string() + " (" + Deployment::instance_id(i) + "), ";
    std::cout << "chaos: " << verdict << "\nchaos: replay with: " << replay_command(options)
              << "\nchaos: logs kept in " << deployment.dir.path().string() << " (" << logs << "chaos.log, "
              << "violations.txt, etcd-*/etcd.log, postgres/postgres.log)" << std::endl;
  };

  CheckReport report;
  std::vector<ServiceFinding> findings;
  std::vector<std::string> slow_takeovers;
  std::vector<std::string> instance_lines;
  std::string takeovers;
  bool settled = false;
  std::string timings;
  std::unique_ptr<EpochSampler> epochs;
  try {
    deployment.start();
    create_base_table(deployment.conninfo());
    epochs = std::make_unique<EpochSampler>(deployment.conninfo(), log);  // the port is known once PostgreSQL runs
    epochs->start();
    auto etcd = ha_etcd_client(deployment);
    const double startup = seconds_since(began);
    log.line("etcd-sync started (" + fixed(startup) + " s); writers start");

    std::vector<std::string> keys;
    for (int i = 0; i < options.keys; ++i) {
      char key[32];
      std::snprintf(key, sizeof key, "%sk%02d", settings.prefix.c_str(), i);
      keys.push_back(key);
    }
    std::vector<std::unique_ptr<EtcdWriter>> etcd_writers;
    std::vector<std::unique_ptr<PgWriter>> pg_writers;
    for (int stream = 0; stream < kWritersPerSide; ++stream) {
      WriterPlan plan;
      plan.keys = keys;
      plan.rate = options.rate / kWritersPerSide;
      plan.delete_share = options.delete_share;
      plan.stream = stream;
      plan.seed = stream_seed(options.seed, 10 + static_cast<std::uint64_t>(stream));
      etcd_writers.push_back(std::make_unique<EtcdWriter>(deployment.etcd_endpoints(), kMarkerPrefix, plan, log));
      plan.seed = stream_seed(options.seed, 20 + static_cast<std::uint64_t>(stream));
      pg_writers.push_back(std::make_unique<PgWriter>(deployment.conninfo(), plan, log));
    }
    for (auto& writer : etcd_writers) writer->start();
    for (auto& writer : pg_writers) writer->start();

    const auto writing = steady_clock::now();
    FaultInjector faults(deployment, kinds, stream_seed(options.seed, 1), log);
    faults.run_until(writing + seconds(options.seconds));
    log.line("writing ends; faults injected: " + faults.summary());
    for (auto& writer : etcd_writers) writer->stop();
    for (auto& writer : pg_writers) writer->stop();
    for (auto& writer : etcd_writers) log.line(writer->summary());
    for (auto& writer : pg_writers) log.line(writer->summary());
    const double wrote = seconds_since(writing);

    const auto settling = steady_clock::now();
    deployment.ensure_servers_up();
    faults.revive_instances();
    HaInput ha;
    HaSnapshot last;
    settled = settle(deployment, *etcd, log, seconds(options.settle_timeout), last);
    ha.final_snapshot = last;
    ha.instances = expected_instances(deployment);
    const double settle_time = seconds_since(settling);
    log.line(std::string(settled ? "settled" : "did not settle") + " after " + fixed(settle_time) + " s");
    for (const auto& key : last.keys)
      log.line("at the end: campaign key of " + key.instance_id + ", create_revision " + std::to_string(key.create_revision));
    for (const auto& row : last.rows)
      log.line("at the end: " + row.instance_id + " pid " + std::to_string(row.pid) + " role " + row.role + " (" +
               row.ha_state + "), epoch " + (row.epoch ? std::to_string(*row.epoch) : std::string("-")));

    const auto checking = steady_clock::now();
    faults.terminate_instances();
    epochs->stop();
    findings = faults.findings();
    takeovers = faults.takeover_summary();
    slow_takeovers = faults.slow_takeovers();
    ha.epoch_samples = epochs->samples();
    for (std::size_t i = 0; i < deployment.instances.size(); ++i) {
      const auto id = Deployment::instance_id(i);
      const auto facts = read_instance_log(id, deployment.instances[i]->log_text());
      ha.leads.insert(ha.leads.end(), facts.leads.begin(), facts.leads.end());
      instance_lines.push_back(describe(id, facts) + "; log " + deployment.instances[i]->log_path().filename().string());
    }
    const CheckInput input = collect_check_input(deployment, kMarkerPrefix, std::move(ha));
    report = check_run(input);
    const double check_time = seconds_since(checking);
    timings = "startup " + fixed(startup) + " s, writing " + fixed(wrote) + " s, settle " + fixed(settle_time) +
              " s, stop+check " + fixed(check_time) + " s, total " + fixed(seconds_since(began)) + " s";
  } catch (const std::exception& e) {
    log.line(std::string("the run could not be carried out: ") + e.what());
    fail_with_files("ERROR (harness)");
    return 2;
  }

  std::ofstream all(deployment.dir.path() / "violations.txt");
  std::cout << "chaos: checks (violations per check, and per kind):\n" << report.summary();
  std::map<std::pair<Check, std::string>, std::size_t> shown;
  std::size_t hidden = 0;
  for (const Check check : all_checks()) {
    for (const auto& violation : report.violations) {
      if (violation.check != check) continue;
      const std::string line = "(" + std::string(1, static_cast<char>(check)) + ", " + violation.kind + ") " + violation.message;
      all << line << "\n";
      if (shown[{check, violation.kind}]++ < kExamplesShownPerKind) {
        std::cout << line << "\n";
      } else {
        ++hidden;
      }
    }
  }
  if (hidden > 0) std::cout << "chaos: " << hidden << " more violations in violations.txt\n";
  for (const auto& note : report.notes) {
    const std::string line = "(note: " + std::string(1, static_cast<char>(note.check)) + ", " + note.kind + ") " + note.message;
    all << line << "\n";
    std::cout << line << "\n";
  }
  for (const auto& line : instance_lines) std::cout << "chaos: " << line << "\n";
  std::cout << "chaos: takeovers (from the fault to a new epoch in etcd_sync_leader): " << takeovers << "\n";
  for (const auto& slow : slow_takeovers) std::cout << "chaos: slow takeover (timing, not a check): " << slow << "\n";
  for (const auto& finding : findings) {
    all << "(service) at " << fixed(finding.at_seconds, 3) << " s: " << finding.message << "\n";
    std::cout << "(service) at " << fixed(finding.at_seconds, 3) << " s: " << finding.message << "\n";
  }
  std::cout << "chaos: " << timings << std::endl;

  if (report.ok() && findings.empty() && settled) {
    std::cout << "chaos: PASSED (seed " << options.seed << ")" << std::endl;
    if (options.keep) {
      deployment.dir.keep();
      std::cout << "chaos: files kept in " << deployment.dir.path().string() << std::endl;
    }
    return 0;
  }
  fail_with_files("FAILED (seed " + std::to_string(options.seed) + ": " + std::to_string(report.violations.size()) +
                  " violations, " + std::to_string(findings.size()) + " service findings" +
                  (settled ? "" : ", did not settle") + ")");
  return 1;
}

}  // namespace
}  // namespace etcd_sync::chaos

int main(int argc, char** argv) {
  // First, before any thread or socket: the servers, the instances' isolated hosts and the network
  // faults live in this namespace. Refused (not root), the run goes on without network faults.
  etcd_sync::testing::enter_private_network();
  using etcd_sync::chaos::Options;
  Options options;
  CLI::App app{"etcd-sync's randomized fault suite: writers on both sides, faults, then a check of "
               "etcd's history against the etcd and etcd_wal tables"};
  app.add_option("--seed", options.seed, "PRNG seed (default: a random one, printed first)");
  app.add_option("--seconds", options.seconds, "seconds of writing under faults")->check(CLI::PositiveNumber);
  app.add_option("--mode", options.mode, "conflict_resolution")->check(CLI::IsMember({"etcd_wins", "postgres_wins"}));
  app.add_option("--etcd-members", options.etcd_members, "etcd cluster size")->check(CLI::IsMember({1, 3}));
  app.add_option("--instances", options.instances,
                 "etcd-sync instances on the same database and prefix (instance_id chaos-0, chaos-1, ...)")
      ->check(CLI::Range(1, 9));
  app.add_option("--faults", options.faults,
                 "fault kinds, comma-separated: service-kill9, service-term, service-stop, etcd-restart, "
                 "etcd-leader-kill9, pg-restart, pg-kill9, leader-stop, election-key-delete, epoch-bump, "
                 "rolling-restart (these four only with --instances 2 or more in all), cut-etcd, cut-postgres, "
                 "cut-both, lossy, etcd-member-stop (these five only as root, in a private network namespace; "
                 "skipped otherwise); or all, none");
  app.add_option("--rate", options.rate, "writes per second on each side")->check(CLI::PositiveNumber);
  app.add_option("--keys", options.keys, "number of shared keys")->check(CLI::PositiveNumber);
  app.add_option("--delete-share", options.delete_share, "share of the writes on each side that are deletes")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--log-level", options.log_level, "etcd-sync's log level");
  app.add_option("--settle-timeout", options.settle_timeout, "seconds to wait for the outbox and the mirror to settle");
  app.add_flag("--keep", options.keep, "keep the temp dir also when the run passes");
  CLI11_PARSE(app, argc, argv);
  options.seed_given = app.count("--seed") > 0;
  if (!options.seed_given) options.seed = std::random_device{}() % 1000000000;
  try {
    etcd_sync::chaos::parse_fault_kinds(options.faults, options.instances);
  } catch (const std::invalid_argument& e) {
    std::cerr << "etcd-sync-chaos: " << e.what() << "\n";
    return 64;
  }
  return etcd_sync::chaos::run(options);
}
