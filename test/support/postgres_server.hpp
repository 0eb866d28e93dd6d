// A throwaway PostgreSQL 15 cluster on a free loopback port.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "test/support/server_process.hpp"

namespace etcd_sync::testing {

/// A PostgreSQL 15 cluster: initdb on first start (trust auth, superuser `postgres`, UTF8), then
/// `postgres` itself as a child. fsync and full_page_writes are off for speed; that only risks
/// data on an OS crash, so a kill9() still keeps every acknowledged commit. synchronous_commit
/// stays on: with fsync off it costs one write() per commit, while off it would lose the last
/// ~600 ms of acknowledged commits on kill9() (they sit in the killed server's WAL buffers).
/// When the test runs as root, initdb and postgres run as the `postgres` system user.
class PostgresServer : public ServerProcess {
 public:
  /// Files go to `parent_dir`/`name` (data/, sock/, postgres.log, initdb.log).
  explicit PostgresServer(const std::filesystem::path& parent_dir, std::string name = "postgres");
  /// Stops the server (fast shutdown, then SIGQUIT).
  ~PostgresServer() override;

  /// Adds `-c name=value` to the next start (e.g. "max_connections", "20").
  void set_setting(const std::string& name, const std::string& value);
  /// Listens on every address (listen_addresses = '*') from the next start(), and trusts
  /// connections from the isolated hosts' addresses (10.213.0.0/16, netns.hpp) in pg_hba.conf, so
  /// that a process in an isolated host reaches the server at the host's server_address().
  /// conninfo() stays on 127.0.0.1. Throws std::logic_error outside the test's private network
  /// namespace (enter_private_network()), where every address would be the machine's.
  void listen_on_all_addresses();
  /// start() runs initdb if there is no cluster yet, launches postgres and waits (up to 30 s)
  /// until PQping says it accepts connections; it throws with the log tail otherwise.

  /// Fast shutdown (SIGINT) and wait; SIGQUIT after 10 s, then SIGKILL. No-op if not running.
  void stop() override;
  /// SIGKILL the postmaster and its backends: an abrupt crash. The next start() runs crash
  /// recovery.
  void kill9() override;

  int port() const { return ServerProcess::port(0); }
  /// "host=127.0.0.1 port=P dbname=DB user=postgres".
  std::string conninfo(const std::string& db = "postgres") const;
  /// CREATE DATABASE `name` (quoted as an identifier).
  void create_database(const std::string& name);
  const std::filesystem::path& data_dir() const { return data_dir_; }

 protected:
  bool prepare_start() override;
  SpawnSpec launch_spec() override;
  bool probe_ready() override;
  std::string describe() const override;

 private:
  void init_cluster();
  /// Appends the isolated hosts' trust line to pg_hba.conf unless it is there.
  void trust_isolated_hosts();
  void wait_crashed_backends_gone();

  std::string name_;
  std::filesystem::path dir_;
  std::filesystem::path data_dir_;
  std::filesystem::path socket_dir_;
  std::optional<UserIds> run_as_;
  std::map<std::string, std::string> settings_;
  bool listen_on_all_ = false;  ///< listen_on_all_addresses(): '*' and a pg_hba.conf line
  std::vector<pid_t> crashed_backends_;  ///< killed by kill9(); may still hold shared memory
};

}  // namespace etcd_sync::testing
