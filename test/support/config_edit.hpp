// Editing a config file a test wrote (SyncEnvironment::write_config) before the service reads it:
// another DSN, more endpoints, a key the settings struct does not carry. Header-only, test-side.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace etcd_sync::testing {

/// Replaces the first `from` in the file at `path` with `to`; throws std::runtime_error when the
/// file has no `from` (a test that edits nothing would test the wrong config).
inline void replace_in_file(const std::filesystem::path& path, const std::string& from, const std::string& to) {
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto at = text.find(from);
  if (at == std::string::npos) throw std::runtime_error(path.string() + " has no \"" + from + "\"");
  text.replace(at, from.size(), to);
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

/// Appends `text` (e.g. a "[metrics]" table) to the file at `path`.
inline void append_to_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  out << text;
}

}  // namespace etcd_sync::testing
