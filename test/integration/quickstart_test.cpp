// What a newcomer meets first: scripts/quickstart and the quickstart guide's Tests 1-4 (its
// "Testing Synchronization"), run as the guide writes them, in a shell set up the way README.md's
// "Quick start" says; and the command line's own help, refusals and `-p ""`.
//
// The guide is not part of this repository: its commands are copied verbatim below. Where the
// guide and etcd-sync differ (README.md, "Quick start") the test checks that the user is told what
// to do instead: `--config /etc/etcd-sync/config.yaml` (TOML only) and `start --daemon
// --pid-file` (foreground only). One command is not run as written: Test 4's `pkill etcd-sync`
// would also kill every other etcd-sync on this machine (other tests run in parallel), so the
// service is stopped as a user at the terminal stops it, with Ctrl-C: SIGINT to
// scripts/quickstart's whole process group, as a terminal sends it.

#include "test/support/servers.hpp"
#include "test/support/service_process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const fs::path source_dir = ETCD_SYNC_SOURCE_DIR;

std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// A terminal beside a running scripts/quickstart, set up as README.md says:
/// `eval "$(scripts/local-servers env)"`, then the guide's commands. `./etcd-sync` is the binary
/// under test (the guide's ./etcd-sync is our build/etcd-sync). The servers are stopped with
/// `scripts/local-servers stop` when this goes, also when the test fails.
class GuideTerminal {
 public:
  GuideTerminal() {
    work_ = dir_.path() / "work";
    fs::create_directories(work_);
    fs::create_symlink(service_binary(), work_ / "etcd-sync");
    // Ports of our own, so that nothing here meets a server someone else runs on the defaults.
    servers_env_ = {{"ETCD_SYNC_LOCAL_DIR", (dir_.path() / "local").string()},
                    {"ETCD_PORT", std::to_string(free_loopback_port())},
                    {"ETCD_PEER_PORT", std::to_string(free_loopback_port())},
                    {"PG_PORT", std::to_string(free_loopback_port())}};
  }
  ~GuideTerminal() {
    try {
      stop_servers();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "scripts/local-servers stop: " << e.what();
    }
  }
  GuideTerminal(const GuideTerminal&) = delete;
  GuideTerminal& operator=(const GuideTerminal&) = delete;

  /// ETCD_SYNC_LOCAL_DIR and the ports, as given to scripts/quickstart.
  const std::map<std::string, std::string>& servers_env() const { return servers_env_; }
  const fs::path& work() const { return work_; }
  const fs::path& dir() const { return dir_.path(); }
  int pg_port() const { return std::stoi(servers_env_.at("PG_PORT")); }

  /// The bash script that runs `command` in this terminal (cwd work/, the README's eval first).
  std::string script(const std::string& command) const {
    return "cd " + quoted(work_.string()) + " && eval \"$(" + quoted((source_dir / "scripts/local-servers").string()) +
           " env)\" && " + command;
  }

  /// Runs one of the guide's commands. Only ETCD_SYNC_LOCAL_DIR is passed on, so `env` must find
  /// the ports by itself, as in a new terminal.
  CommandResult run(const std::string& command) const {
    return run_command("/bin/bash", {"-c", script(command)},
                       {{"ETCD_SYNC_LOCAL_DIR", servers_env_.at("ETCD_SYNC_LOCAL_DIR")}});
  }

  /// Runs `command` until its stdout matches `pattern` or `deadline` passes; returns the last run.
  CommandResult run_until(const std::string& command, const std::string& pattern,
                          std::chrono::milliseconds deadline = 15s) const {
    const std::regex wanted(pattern);
    CommandResult last;
    wait_until(
        [&] {
          last = run(command);
          return last.exit_code == 0 && std::regex_search(last.stdout_text, wanted);
        },
        deadline, 100ms);
    return last;
  }

  void stop_servers() {
    if (stopped_) return;
    stopped_ = true;
    const auto r = run_command(source_dir / "scripts/local-servers", {"stop"}, servers_env_, 60s);
    if (r.exit_code != 0) ADD_FAILURE() << "scripts/local-servers stop: " << r.shown();
  }

 private:
  TempDir dir_;
  fs::path work_;
  std::map<std::string, std::string> servers_env_;
  bool stopped_ = false;
};

// The guide's Tests 1-4, verbatim (trailing spaces included).
const std::string test1_puts[] = {
    R"(etcdctl put /config/app/timeout "30s")",
    R"(etcdctl put /config/app/retries "3")",
    R"(etcdctl put /config/db/host "localhost")",
};
const std::string test1_select = R"(psql -U sync_user -d sync_db -c "SELECT * FROM etcd ORDER BY key, revision;")";
const std::string test2_insert = "psql -U sync_user -d sync_db -c \"\n"
                                 "INSERT INTO etcd_wal (key, value, revision) \n"
                                 "VALUES ('/config/app/debug', 'true', NULL);\n"
                                 "\"";
const std::string test2_pending = R"(psql -U sync_user -d sync_db -c "SELECT * FROM etcd_wal WHERE status = 'pending';")";
const std::string test2_get = "etcdctl get /config/app/debug";
const std::string test2_latest = R"(psql -U sync_user -d sync_db -c "SELECT * FROM etcd_wal ORDER BY ts DESC LIMIT 1;")";
const std::string test3_put = R"(etcdctl put /config/test/conflict "etcd-value")";
const std::string test3_insert = "psql -U sync_user -d sync_db -c \"\n"
                                 "INSERT INTO etcd_wal (key, value, revision) \n"
                                 "VALUES ('/config/test/conflict', 'pg-value', 1005);\n"
                                 "\"";
const std::string test3_status = "./etcd-sync status --format json | jq '.synchronization.conflicts_resolved'";
const std::string test3_get = "etcdctl get /config/test/conflict";
const std::string test4_put = R"(etcdctl put /config/test/offline "offline-change")";
const std::string test4_restart = "./etcd-sync start --config /etc/etcd-sync/config.yaml";  // the guide adds " &"
const std::string test4_select = R"(psql -U sync_user -d sync_db -c "SELECT * FROM etcd WHERE key = '/config/test/offline';")";
// "Running the Service" and "Validate Configuration", before the tests.
const std::string guide_validate = "./etcd-sync config validate";
const std::string guide_daemon = "./etcd-sync start --daemon --pid-file /var/run/etcd-sync.pid";
const std::string guide_status = "./etcd-sync status --format json";

const std::string yaml_refusal =
    "YAML is not supported; the same sections and keys in TOML: conf/quickstart.toml";
const std::string daemon_refusal = "etcd-sync runs in the foreground; use the systemd unit in conf/";

// A row of psql's aligned output: `| key | value |`.
std::string row(const std::string& key, const std::string& value) {
  return "\\|\\s*" + key + "\\s*\\|\\s*" + value + "\\s*\\|";
}

TEST(QuickstartGuide, TestsOneToFourAsWrittenBesideScriptsQuickstart) {
  // What GuideTerminal does first is what the README tells the user to do.
  ASSERT_NE(read_text_file(source_dir / "README.md").find("\neval \"$(scripts/local-servers env)\"\n"),
            std::string::npos);
  GuideTerminal terminal;

  // The README's first command (minus installing and building, done already) in a terminal.
  const fs::path quickstart_log = terminal.dir() / "quickstart.log";
  ChildProcess quickstart;
  SpawnSpec spec;
  spec.program = source_dir / "scripts/quickstart";
  spec.env = terminal.servers_env();
  spec.env["SKIP_BUILD"] = "1";
  spec.env["ETCD_SYNC"] = service_binary().string();
  spec.output_path = quickstart_log;
  quickstart.start(spec);
  ASSERT_TRUE(wait_until(
      [&] { return read_text_file(quickstart_log).find("from=snapshotting to=watching") != std::string::npos; },
      90s, 100ms))
      << tail_of_file(quickstart_log);
  const std::string log_on_failure = "\n--- the end of scripts/quickstart's output:\n";

  // Configuration and Running the Service: what the guide's own commands get.
  auto r = terminal.run(guide_validate);
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_NE(r.stdout_text.find("ok: defaults is valid"), std::string::npos) << r.shown();
  r = terminal.run(guide_daemon);
  EXPECT_EQ(r.exit_code, 1) << r.shown();
  EXPECT_NE(r.stderr_text.find(daemon_refusal), std::string::npos) << r.shown();
  r = terminal.run(guide_status);
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_EQ(nlohmann::json::parse(r.stdout_text)["service"]["running"], true) << r.shown();

  // Test 1: etcd to PostgreSQL.
  for (const auto& put : test1_puts) {
    r = terminal.run(put);
    ASSERT_EQ(r.exit_code, 0) << put << "\n" << r.shown();
    EXPECT_EQ(r.stdout_text, "OK\n") << put;
  }
  r = terminal.run_until(test1_select, "\\(3 rows\\)");
  ASSERT_NE(r.stdout_text.find("(3 rows)"), std::string::npos) << r.shown() << log_on_failure << tail_of_file(quickstart_log);
  EXPECT_TRUE(std::regex_search(r.stdout_text, std::regex(row("/config/app/timeout", "30s")))) << r.stdout_text;
  EXPECT_TRUE(std::regex_search(r.stdout_text, std::regex(row("/config/app/retries", "3")))) << r.stdout_text;
  EXPECT_TRUE(std::regex_search(r.stdout_text, std::regex(row("/config/db/host", "localhost")))) << r.stdout_text;
  // psql without -h also finds the local server in its default socket directory when that is
  // writable for the server (as root: /var/run/postgresql belongs to postgres), with only the
  // port said (the guide's setup has the default port and needs nothing).
  if (::access("/var/run/postgresql", W_OK) == 0) {
    r = run_command("/bin/bash",
                    {"-c", "unset PGHOST; PGPORT=" + std::to_string(terminal.pg_port()) + " " + test1_select});
    EXPECT_EQ(r.exit_code, 0) << r.shown();
    EXPECT_NE(r.stdout_text.find("(3 rows)"), std::string::npos) << r.shown();
  }

  // Test 2: PostgreSQL to etcd.
  r = terminal.run(test2_insert);
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_EQ(r.stdout_text, "INSERT 0 1\n");
  r = terminal.run(test2_pending);  // pending or already done: the service is quick
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  r = terminal.run_until(test2_get, "^/config/app/debug\ntrue\n$");
  EXPECT_EQ(r.stdout_text, "/config/app/debug\ntrue\n") << r.shown() << log_on_failure << tail_of_file(quickstart_log);
  r = terminal.run_until(test2_latest, "/config/app/debug\\s*\\|\\s*true\\s*\\|\\s*\\d+\\s*\\|\\s*success\\s*\\|");
  EXPECT_NE(r.stdout_text.find("success"), std::string::npos) << r.shown();

  // Test 3: a conflict; etcd_wins keeps etcd's value.
  r = terminal.run(test3_put);
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  r = terminal.run(test3_insert);
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  r = terminal.run_until(test3_status, "^1\n$");  // the heartbeat publishes the counter each second
  EXPECT_EQ(r.stdout_text, "1\n") << r.shown() << log_on_failure << tail_of_file(quickstart_log);
  r = terminal.run(test3_get);
  EXPECT_EQ(r.stdout_text, "/config/test/conflict\netcd-value\n") << r.shown();

  // Test 4: the service stops (Ctrl-C on scripts/quickstart), etcd and PostgreSQL go on.
  ASSERT_EQ(::kill(-quickstart.pid(), SIGINT), 0);
  EXPECT_EQ(quickstart.wait_exit(20s), 0) << tail_of_file(quickstart_log);
  r = terminal.run("etcdctl endpoint health");
  EXPECT_EQ(r.exit_code, 0) << "etcd did not outlive Ctrl-C\n" << r.shown();
  r = terminal.run(R"(psql -U sync_user -d sync_db -tAc "SELECT 'still here'")");
  EXPECT_EQ(r.stdout_text, "still here\n") << "PostgreSQL did not outlive Ctrl-C\n" << r.shown();
  r = terminal.run(test4_put);
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_EQ(r.stdout_text, "OK\n");

  // The guide's restart names its YAML file: refused, with where the TOML spelling is.
  r = terminal.run(test4_restart);
  EXPECT_EQ(r.exit_code, 1) << r.shown();
  EXPECT_NE(r.stderr_text.find(yaml_refusal), std::string::npos) << r.shown();
  // So the user takes conf/quickstart.toml, with their ports. It holds a password: while others
  // may read it, etcd-sync says so; after the guide's chmod 600 it does not.
  std::string toml = read_text_file(source_dir / "conf/quickstart.toml");
  toml = std::regex_replace(toml, std::regex("port = 5432 "), "port = " + std::to_string(terminal.pg_port()) + " ");
  const fs::path config = terminal.work() / "config.toml";
  std::ofstream(config) << toml;
  fs::permissions(config, fs::perms(0644));
  r = terminal.run("./etcd-sync config validate --config config.toml");
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_NE(r.stdout_text.find(config.filename().string() + " holds a password but is readable by group or others (mode 0644)"),
            std::string::npos)
      << r.shown();
  fs::permissions(config, fs::perms(0600));
  r = terminal.run("./etcd-sync config validate --config config.toml");
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_EQ(r.stdout_text.find("holds a password"), std::string::npos) << r.shown();

  // Restarted in the background (the guide's "&"), it brings over what changed while it was down.
  ChildProcess service;
  SpawnSpec restart;
  restart.program = "/bin/bash";
  restart.args = {"-c", terminal.script("exec ./etcd-sync start --config config.toml")};
  restart.env = {{"ETCD_SYNC_LOCAL_DIR", terminal.servers_env().at("ETCD_SYNC_LOCAL_DIR")}};
  restart.output_path = terminal.dir() / "restarted.log";
  service.start(restart);
  r = terminal.run_until(test4_select, row("/config/test/offline", "offline-change"));
  EXPECT_TRUE(std::regex_search(r.stdout_text, std::regex(row("/config/test/offline", "offline-change"))))
      << r.shown() << "\n--- restarted etcd-sync:\n" << tail_of_file(restart.output_path);
  service.signal(SIGTERM);
  EXPECT_EQ(service.wait_exit(20s), 0) << tail_of_file(restart.output_path);

  // scripts/local-servers stop ends both servers.
  terminal.stop_servers();
  r = terminal.run("etcdctl --dial-timeout=1s endpoint health");
  EXPECT_NE(r.exit_code, 0) << "etcd still answers after scripts/local-servers stop\n" << r.shown();
  r = terminal.run(R"(psql -U sync_user -d sync_db -tAc "SELECT 1")");
  EXPECT_NE(r.exit_code, 0) << "PostgreSQL still answers after scripts/local-servers stop\n" << r.shown();
}

// --- the command line --------------------------------------------------------------------------

TEST(CommandLine, EveryHelpCarriesOneExampleLine) {
  const std::vector<std::vector<std::string>> commands = {
      {}, {"start"}, {"status"}, {"validate"}, {"sync"}, {"config"}, {"config", "validate"}, {"migrate"}};
  for (auto args : commands) {
    std::string name = "etcd-sync";
    for (const auto& a : args) name += " " + a;
    args.push_back("--help");
    const auto r = run_binary(args);
    EXPECT_EQ(r.exit_code, 0) << name << "\n" << r.shown();
    std::vector<std::string> examples;
    std::istringstream lines(r.stdout_text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("Example: ", 0) == 0) examples.push_back(line);
    }
    ASSERT_EQ(examples.size(), 1u) << name << "\n" << r.stdout_text;
    // The example uses the command it documents (the top level's shows `start`).
    const std::string expected = args.size() == 1 ? "Example: etcd-sync start" : "Example: " + name;
    EXPECT_EQ(examples[0].rfind(expected, 0), 0u) << name << ": " << examples[0];
  }
}

TEST(CommandLine, DaemonAndPidFileAreRefusedWithWhatToDoInstead) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"start", "--daemon"},
                                              {"start", "--pid-file", "/run/etcd-sync.pid"},
                                              {"start", "--daemon", "--pid-file", "/run/etcd-sync.pid"}}) {
    const auto r = run_binary(args, {}, 10s);
    EXPECT_EQ(r.exit_code, 1) << r.shown();
    EXPECT_NE(r.stderr_text.find(daemon_refusal), std::string::npos) << r.shown();
  }
  // Refused, not offered.
  const auto help = run_binary({"start", "--help"});
  EXPECT_EQ(help.stdout_text.find("--daemon"), std::string::npos) << help.stdout_text;
  EXPECT_EQ(help.stdout_text.find("--pid-file"), std::string::npos) << help.stdout_text;
}

TEST(CommandLine, EmptyPostgresDsnFlagLeavesTheConnectionToThePgVariables) {
  TempDir dir;
  PostgresServer postgres(dir.path());
  postgres.start();
  // The environment names a server that is not there; the PG* variables name the real one.
  const std::map<std::string, std::string> env = {
      {"ETCD_SYNC_POSTGRES_DSN", "host=127.0.0.1 port=" + std::to_string(free_loopback_port()) + " dbname=postgres user=postgres"},
      {"PGHOST", "127.0.0.1"},
      {"PGPORT", std::to_string(postgres.port())},
      {"PGUSER", "postgres"},
      {"PGDATABASE", "postgres"}};
  // Without -p "" the environment's DSN is used: it cannot connect (exit 2).
  auto r = run_binary({"migrate"}, env);
  EXPECT_EQ(r.exit_code, 2) << r.shown();
  // Given, even empty, -p wins over the environment, and libpq takes PG* as they are.
  r = run_binary({"migrate", "-p", ""}, env);
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_NE(r.stdout_text.find("migration(s) in schema public"), std::string::npos) << r.shown();
  EXPECT_EQ(PgClient(postgres.conninfo()).scalar("SELECT to_regclass('public.etcd_wal') IS NOT NULL"), "t");
}

}  // namespace
}  // namespace etcd_sync::testing
