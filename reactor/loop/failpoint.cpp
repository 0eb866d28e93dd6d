#include "reactor/loop/failpoint.hpp"

#include "reactor/loop/logging.hpp"

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

namespace etcd_sync {

namespace {

struct Failpoint {
  std::string name;
  std::string action;
  int hit_at = 1;
  int hits = 0;
};

std::vector<Failpoint> parse(const char* text) {
  std::vector<Failpoint> out;
  std::string_view rest = text ? text : "";
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    auto eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    Failpoint fp;
    fp.name = std::string(item.substr(0, eq));
    std::string_view action = item.substr(eq + 1);
    if (auto at = action.find('@'); at != std::string_view::npos) {
      fp.hit_at = std::atoi(std::string(action.substr(at + 1)).c_str());
      action = action.substr(0, at);
    }
    fp.action = std::string(action);
    out.push_back(std::move(fp));
  }
  return out;
}

std::vector<Failpoint>& failpoints() {
  static std::vector<Failpoint> all = parse(std::getenv("ETCD_SYNC_FAILPOINTS"));
  return all;
}

}  // namespace

void failpoint(std::string_view name) {
  auto& all = failpoints();
  if (all.empty()) return;
  for (auto& fp : all) {
    if (fp.name != name || ++fp.hits != fp.hit_at) continue;
    log_warn("failpoint reached", {{"failpoint", fp.name}, {"action", fp.action}, {"hit", fp.hits}});
    if (fp.action == "kill") raise(SIGKILL);
    if (fp.action == "stop") raise(SIGSTOP);
  }
}

}  // namespace etcd_sync
