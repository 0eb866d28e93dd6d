// Throwaway etcd and PostgreSQL servers for integration tests, and the child-process plumbing
// they (and ServiceProcess) share: one header for all of test/support's server side.
//
// Every server runs as a direct child of the test process on free loopback ports with its data,
// socket and log files under a TempDir (see server_process.hpp for the lifecycle they share and
// process.hpp for how children are spawned and never left behind).
#pragma once

#include "test/support/etcd_cluster.hpp"
#include "test/support/etcd_server.hpp"
#include "test/support/files.hpp"
#include "test/support/pg_client.hpp"
#include "test/support/ports.hpp"
#include "test/support/postgres_server.hpp"
#include "test/support/process.hpp"
#include "test/support/server_process.hpp"
#include "test/support/temp_dir.hpp"
#include "test/support/wait.hpp"

namespace etcd_sync::testing {

/// One etcd and one PostgreSQL with their files in a TempDir of their own, started: the servers of
/// a test suite. With `on_all_addresses` they also listen on every address of the test's private
/// network namespace (netns.hpp; throws std::logic_error outside one). Destroyed servers first,
/// then the directory that holds their files.
struct ServerPair {
  explicit ServerPair(bool on_all_addresses = false) : etcd(dir.path()), postgres(dir.path()) {
    if (on_all_addresses) {
      etcd.listen_on_all_addresses();
      postgres.listen_on_all_addresses();
    }
    etcd.start();
    postgres.start();
  }
  TempDir dir;
  EtcdServer etcd;
  PostgresServer postgres;
};

}  // namespace etcd_sync::testing
