#include "test/support/server_programs.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/support/process.hpp"

namespace etcd_sync::testing {

namespace fs = std::filesystem;

namespace {

bool executable(const fs::path& p) { return ::access(p.c_str(), X_OK) == 0; }

/// `name` in one of ETCD_SYNC_SERVER_PATH's directories, or nullopt.
std::optional<fs::path> from_setting(std::string_view name) {
  const char* setting = std::getenv("ETCD_SYNC_SERVER_PATH");
  if (setting == nullptr) return std::nullopt;
  std::stringstream dirs(setting);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::absolute(fs::path(dir) / name);
    if (executable(candidate)) return candidate;
  }
  return std::nullopt;
}

/// The newest /usr/lib/postgresql/<major>/bin that holds initdb, by major version number.
fs::path newest_postgres_bin_dir() {
  static const fs::path dir = [] {
    std::vector<std::pair<int, fs::path>> found;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string major = entry.path().filename().string();
      if (major.empty() || !std::all_of(major.begin(), major.end(), ::isdigit)) continue;
      if (executable(entry.path() / "bin" / "initdb")) {
        found.emplace_back(std::stoi(major), entry.path() / "bin");
      }
    }
    if (found.empty()) return fs::path();
    return std::max_element(found.begin(), found.end())->second;
  }();
  return dir;
}

}  // namespace

fs::path etcd_program() { return from_setting("etcd").value_or("/usr/bin/etcd"); }

fs::path etcdctl_program() { return from_setting("etcdctl").value_or("/usr/bin/etcdctl"); }

std::string etcd_version() {
  static const std::string version = [] {
    const auto result = run_command(etcd_program(), {"--version"}, {}, std::chrono::seconds(10));
    const std::string marker = "etcd Version: ";
    const auto at = result.stdout_text.find(marker);
    if (result.exit_code != 0 || at == std::string::npos)
      throw std::runtime_error(etcd_program().string() + " --version did not say: " + result.stdout_text);
    const auto start = at + marker.size();
    return result.stdout_text.substr(start, result.stdout_text.find('\n', start) - start);
  }();
  return version;
}

fs::path postgres_program(std::string_view name) {
  if (auto p = from_setting(name)) return *p;
  const fs::path dir = newest_postgres_bin_dir();
  if (dir.empty()) {
    throw std::runtime_error("no PostgreSQL server installed under /usr/lib/postgresql, and " + std::string(name) +
                             " is in no directory of ETCD_SYNC_SERVER_PATH");
  }
  return dir / name;
}

}  // namespace etcd_sync::testing
