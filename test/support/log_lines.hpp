// Finding the service's JSON log lines by their fields ("level", "msg", "peer", ...), for tests
// that wait on what the service says rather than on a substring of it. Header-only, test-side code.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace etcd_sync::testing {

/// (field, value) pairs a JSON log line must carry, each value compared as a string.
using LogFields = std::vector<std::pair<std::string, std::string>>;

/// The first line of `log` that is a JSON object holding every field of `fields` with that string
/// value; nullopt when there is none. Lines that are not JSON (start markers) are skipped.
inline std::optional<nlohmann::json> find_log_line(const std::string& log, const LogFields& fields) {
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line.front() != '{') continue;
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) continue;
    bool all = true;
    for (const auto& [field, value] : fields) {
      auto it = parsed.find(field);
      if (it == parsed.end() || !it->is_string() || it->get<std::string>() != value) {
        all = false;
        break;
      }
    }
    if (all) return parsed;
  }
  return std::nullopt;
}

}  // namespace etcd_sync::testing
