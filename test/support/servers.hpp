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
