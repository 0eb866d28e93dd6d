// etcd-sync-bench: the load generator and scenarios of perf/README.md.
//
//   etcd-sync-bench [options] all | saturation | mirror-latency | outbox | snapshot | idle | catch-up | pruning |
//                             failover | takeover | logging | two-prefix | prune-mechanism ...
//   (a..l are aliases of the scenarios in that order)
//
// Each scenario starts its own etcd, PostgreSQL and etcd-sync on free loopback ports in a temp
// directory, prints details and one "RESULT" line, and leaves the logs in --out/<scenario>/.

#include "perf/bench_env.hpp"
#include "reactor/loop/logging.hpp"

#include <CLI/CLI.hpp>

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>

namespace {

using namespace etcd_sync::bench;

struct Scenario {
  const char* name;
  const char* alias;
  Outcome (*run)(const BenchOptions&);
};

const Scenario scenarios[] = {
    {"saturation", "a", run_saturation}, {"mirror-latency", "b", run_mirror_latency},
    {"outbox", "c", run_outbox},         {"snapshot", "d", run_snapshot},
    {"idle", "e", run_idle},             {"catch-up", "f", run_catch_up},
    {"pruning", "g", run_pruning},       {"failover", "h", run_failover},
    {"takeover", "i", run_takeover},     {"logging", "j", run_logging},
    {"two-prefix", "k", run_two_prefix}, {"prune-mechanism", "l", run_prune_mechanism},
};

std::string machine() {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  std::string cpu = "?";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  utsname u{};
  uname(&u);
  return format("%ld cores (%s), %.1f GiB RAM, Linux %s", cores, cpu.c_str(),
                static_cast<double>(pages) * page / (1 << 30), u.release);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"etcd-sync benchmarks: etcd and PostgreSQL on loopback, the etcd-sync binary, a load generator"};
  BenchOptions o;
  std::vector<std::string> names;
  app.add_option("scenarios", names, "all (default), or any of: saturation mirror-latency outbox snapshot idle catch-up pruning failover takeover logging "
                 "two-prefix prune-mechanism (a..l)");
  app.add_option("--out", o.out_dir, "where each scenario's logs and config are kept")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "[sync] batch_size of the service")->capture_default_str();
  app.add_option("--log-level", o.log_level, "[logging] level of the service")->capture_default_str();
  app.add_option("--service-binary", o.service_binary, "the etcd-sync to measure (default: the one built with this)");
  app.add_option("--pg-setting", o.pg_settings, "name=value for PostgreSQL (ALTER SYSTEM), repeatable")
      ->allow_extra_args(false);
  app.add_option("--streams", o.streams, "(a) concurrent Put streams")->capture_default_str();
  app.add_option("--seconds", o.saturation_seconds, "(a) measured window")->capture_default_str();
  app.add_flag("--reference-watch", o.reference_watch,
               "(a) also watch the prefix from the generator, to compare etcd's watch delivery with the mirror");
  app.add_flag("--etcdctl-watch", o.etcdctl_watch,
               "(a) also run `etcdctl watch --prefix` (etcd's own Go client) and compare its progress with the mirror");
  app.add_option("--warmup", o.warmup_seconds, "(a) warm-up before the window")->capture_default_str();
  app.add_option("--rate", o.rate, "(b, c, g, k) puts or rows per second (k: puts per prefix)")->capture_default_str();
  app.add_option("--latency-seconds", o.latency_seconds, "(b, c, k) how long the fixed rate runs")->capture_default_str();
  app.add_option("--inserters", o.inserters, "(c) PostgreSQL connections inserting at the fixed rate")->capture_default_str();
  app.add_option("--wal-rows", o.wal_rows, "(c) rows in the throughput INSERT")->capture_default_str();
  app.add_option("--wal-history", o.wal_history,
                 "(c) settled etcd_wal rows written and analyzed first, as on a table of long history: the planner "
                 "then believes nothing is pending")
      ->capture_default_str();
  app.add_option("--keys", o.snapshot_keys, "(d) keys in the snapshot")->capture_default_str();
  app.add_option("--value-bytes", o.value_bytes, "value size of every put and row")->capture_default_str();
  app.add_option("--load-budget", o.load_budget_seconds, "(d) seconds allowed for loading etcd")->capture_default_str();
  app.add_option("--load-concurrency", o.load_concurrency, "(c, d, f) Txns in flight while loading (c: its reference)")->capture_default_str();
  app.add_option("--idle-seconds", o.idle_seconds, "(e) measured idle window")->capture_default_str();
  app.add_option("--catchup-events", o.catchup_events, "(f) puts written to etcd while etcd-sync is stopped")
      ->capture_default_str();
  app.add_option("--prune-rows", o.prune_rows, "(g, l) history rows to prune (10 versions per key)")
      ->capture_default_str();
  app.add_option("--load-rate", o.load_rate, "(h, i) etcd_wal rows/s and etcd puts/s of the steady load")->capture_default_str();
  app.add_option("--rounds", o.rounds, "(h) kills of etcd's leader while etcd-sync works on it")->capture_default_str();
  app.add_option("--follower-rounds", o.follower_rounds, "(h) then kills of etcd's leader while etcd-sync works on a follower")
      ->capture_default_str();
  app.add_option("--ttl", o.ttls, "(i) [ha] ttl in seconds, one pass of the three faults each (repeatable)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  etcd_sync::configure_logging(etcd_sync::LogLevel::warn, etcd_sync::LogFormat::text);
  std::vector<const Scenario*> chosen;
  if (names.empty()) names.push_back("all");
  for (const auto& name : names) {
    bool found = false;
    for (const auto& s : scenarios)
      if (name == "all" || name == s.name || name == s.alias) {
        chosen.push_back(&s);
        found = true;
      }
    if (!found) {
      std::fprintf(stderr, "unknown scenario '%s' (all, saturation, mirror-latency, outbox, snapshot, idle, catch-up, pruning, failover, "
                   "takeover, logging, two-prefix, prune-mechanism, a..l)\n",
                   name.c_str());
      return 2;
    }
  }

  std::printf("machine: %s; load average %s\n", machine().c_str(), load_average().c_str());
  std::printf("etcd, PostgreSQL, etcd-sync and this generator all share the machine's cores.\n\n");
  std::fflush(stdout);
  std::vector<Outcome> outcomes;
  int failures = 0;
  for (const auto* s : chosen) {
    try {
      auto outcome = s->run(o);
      std::printf("RESULT %s: %s\n\n", outcome.name.c_str(), outcome.line.c_str());
      outcomes.push_back(outcome);
    } catch (const std::exception& e) {
      std::printf("RESULT %s: ERROR %s\n\n", s->name, e.what());
      outcomes.push_back({s->name, std::string("ERROR ") + e.what(), false});
      ++failures;
    }
    std::fflush(stdout);
  }
  if (outcomes.size() > 1) {
    std::printf("== summary ==\n");
    for (const auto& outcome : outcomes) std::printf("%-18s %s\n", outcome.name.c_str(), outcome.line.c_str());
  }
  // Missing a target is a finding, not a crash: the exit code only says whether every scenario ran.
  return failures == 0 ? 0 : 1;
}
