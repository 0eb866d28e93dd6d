#include "test/support/postgres_server.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "test/support/files.hpp"
#include "test/support/netns.hpp"
#include "test/support/pg_client.hpp"
#include "test/support/posix.hpp"
#include "test/support/server_programs.hpp"
#include "test/support/wait.hpp"

namespace etcd_sync::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

/// conninfo value quoting: bare if safe, else single-quoted with \ and ' escaped.
std::string conninfo_value(const std::string& value) {
  const bool bare = !value.empty() && value.find_first_of(" \t\n'\\=") == std::string::npos;
  if (bare) return value;
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::string quote_identifier(const std::string& name) {
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace

PostgresServer::PostgresServer(const fs::path& parent_dir, std::string name)
    : ServerProcess(parent_dir / name / "postgres.log",
                    Policy{.port_count = 1,
                           .ready_deadline = seconds(30),
                           .port_clash_text = "Address already in use",
                           .abandon_signal = SIGQUIT,
                           .abandon_grace = seconds(5)}),
      name_(std::move(name)),
      dir_(parent_dir / name_),
      data_dir_(dir_ / "data"),
      socket_dir_(dir_ / "sock") {
  // initdb and postgres refuse to run as root.
  if (::geteuid() == 0) {
    const passwd* user = ::getpwnam("postgres");
    if (user == nullptr) {
      throw std::runtime_error("running as root but there is no `postgres` user to run as");
    }
    run_as_ = UserIds{user->pw_uid, user->pw_gid};
  }
  fs::create_directories(socket_dir_);
  if (run_as_) {
    for (const auto& dir : {dir_, socket_dir_}) {
      if (::chown(dir.c_str(), run_as_->uid, run_as_->gid) != 0) throw_errno("chown " + dir.string());
    }
  }
}

PostgresServer::~PostgresServer() {
  try {
    stop();
  } catch (...) {
    // ChildProcess's destructor still SIGKILLs and reaps.
  }
}

void PostgresServer::set_setting(const std::string& name, const std::string& value) {
  settings_[name] = value;
}

void PostgresServer::listen_on_all_addresses() {
  if (!in_private_network())
    throw std::logic_error(describe() + ": listening on every address outside the test's private network namespace (" +
                           private_network_error() + ")");
  listen_on_all_ = true;
  settings_["listen_addresses"] = "*";
}

void PostgresServer::trust_isolated_hosts() {
  constexpr const char* line = "host all all 10.213.0.0/16 trust  # isolated hosts (test/support/netns.hpp)";
  const fs::path hba = data_dir_ / "pg_hba.conf";
  if (read_text_file(hba).find(line) != std::string::npos) return;
  std::ofstream out(hba, std::ios::app);
  out << line << "\n";
  if (!out) throw std::runtime_error("cannot append to " + hba.string());
}

void PostgresServer::init_cluster() {
  if (fs::exists(data_dir_ / "PG_VERSION")) return;
  fs::remove_all(data_dir_);  // leftovers of a failed initdb
  fs::create_directory(data_dir_);
  fs::permissions(data_dir_, fs::perms::owner_all);
  if (run_as_ && ::chown(data_dir_.c_str(), run_as_->uid, run_as_->gid) != 0) {
    throw_errno("chown " + data_dir_.string());
  }
  const fs::path initdb_log = dir_ / "initdb.log";
  SpawnSpec spec;
  spec.program = postgres_program("initdb");
  spec.args = {"--pgdata=" + data_dir_.string(), "--username=postgres", "--auth=trust",
               "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"};
  spec.output_path = initdb_log;
  spec.working_dir = dir_;
  spec.run_as = run_as_;
  ChildProcess initdb;
  initdb.start(spec);
  const auto code = initdb.wait_exit(seconds(60));
  if (code != 0) {
    throw std::runtime_error("initdb " + data_dir_.string() + " failed (" +
                             (code ? "exit " + std::to_string(*code) : std::string("timed out")) +
                             "); " + initdb_log.string() + " ends with:\n" +
                             tail_of_file(initdb_log));
  }
}

bool PostgresServer::prepare_start() {
  init_cluster();
  if (listen_on_all_) trust_isolated_hosts();
  wait_crashed_backends_gone();
  return !ports_chosen();  // restarts keep their port
}

SpawnSpec PostgresServer::launch_spec() {
  SpawnSpec spec;
  spec.program = postgres_program("postgres");
  spec.args = {"-D", data_dir_.string(),
               "-p", std::to_string(port()),
               "-k", socket_dir_.string(),
               "-c", "listen_addresses=127.0.0.1",
               "-c", "fsync=off",
               "-c", "full_page_writes=off"};
  for (const auto& [name, value] : settings_) {
    spec.args.push_back("-c");
    spec.args.push_back(name + "=" + value);
  }
  spec.output_path = log_path();
  spec.working_dir = dir_;
  // SIGQUIT is postgres' immediate shutdown: the postmaster takes its backends with it.
  spec.death_signal = SIGQUIT;
  spec.run_as = run_as_;
  return spec;
}

bool PostgresServer::probe_ready() {
  const std::string probe = conninfo() + " connect_timeout=2";
  return PQping(probe.c_str()) == PQPING_OK;
}

std::string PostgresServer::describe() const { return "postgres on port " + std::to_string(port()); }

void PostgresServer::wait_crashed_backends_gone() {
  // Backends of a killed postmaster keep the old shared memory attached until they exit, and a
  // new postmaster refuses to start while they do.
  wait_until(
      [this] { return std::all_of(crashed_backends_.begin(), crashed_backends_.end(), process_gone); },
      seconds(10));
  crashed_backends_.clear();
}

void PostgresServer::stop() {
  if (!process_.running()) return;
  process_.signal(SIGINT);  // fast shutdown: roll back open transactions, checkpoint, exit
  if (process_.wait_exit(seconds(10))) return;
  process_.signal(SIGQUIT);  // immediate shutdown
  if (process_.wait_exit(seconds(5))) return;
  kill9();
}

void PostgresServer::kill9() {
  if (!process_.running()) return;
  const pid_t postmaster = process_.pid();
  // Orphaned backends come to us rather than to PID 1, which in a container often never reaps
  // them (they would linger as zombies).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Stop the postmaster first so it cannot fork replacements, then take its children.
  ::kill(postmaster, SIGSTOP);
  crashed_backends_ = children_of(postmaster);
  ::kill(postmaster, SIGKILL);
  for (const pid_t backend : crashed_backends_) ::kill(backend, SIGKILL);
  process_.stop(SIGKILL, milliseconds(0));
  wait_crashed_backends_gone();
}

std::string PostgresServer::conninfo(const std::string& db) const {
  return "host=127.0.0.1 port=" + std::to_string(port()) + " dbname=" + conninfo_value(db) +
         " user=postgres";
}

void PostgresServer::create_database(const std::string& name) {
  PgClient client(conninfo());
  client.exec("CREATE DATABASE " + quote_identifier(name));
}

}  // namespace etcd_sync::testing
