// Where the tests, the fault suite and the benchmarks find etcd's and PostgreSQL's programs.
//
// One setting chooses them: ETCD_SYNC_SERVER_PATH, a colon-separated list of directories searched
// first, in order, for every program asked for. Without it (or for a program none of its
// directories holds), etcd and etcdctl come from /usr/bin, and PostgreSQL's server programs from
// its newest installed bin directory (/usr/lib/postgresql/<major>/bin, which Debian's packages
// fill: 15 on Debian 12, 17 on Debian 13).
//
// For example, Debian 13's etcd 3.5 unpacked into the build tree (README "Tests"):
//   ETCD_SYNC_SERVER_PATH=$PWD/build/etcd-3.5/usr/bin ctest --test-dir build
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace etcd_sync::testing {

/// The etcd program to start: `etcd`, searched as the header describes.
std::filesystem::path etcd_program();

/// The etcdctl program (API v3), searched as the header describes.
std::filesystem::path etcdctl_program();

/// The version etcd_program() reports ("3.4.23"), from `etcd --version`; throws
/// std::runtime_error when it does not say.
std::string etcd_version();

/// A PostgreSQL server program by name ("initdb", "postgres", "pg_ctl", "pg_basebackup", ...),
/// searched as the header describes. Throws std::runtime_error when no PostgreSQL bin directory
/// is installed and ETCD_SYNC_SERVER_PATH does not hold the program.
std::filesystem::path postgres_program(std::string_view name);

}  // namespace etcd_sync::testing
