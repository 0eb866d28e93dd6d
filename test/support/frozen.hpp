// A server frozen with SIGSTOP for as long as a scope lasts: its sockets stay open and its peers'
// calls hang, which no stopped or killed server can show. Header-only, test-side code.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "test/support/files.hpp"
#include "test/support/process.hpp"
#include "test/support/wait.hpp"

namespace etcd_sync::testing {

/// The state letter of `pid` in /proc/<pid>/stat ('R', 'S', 'T' stopped, 'Z' zombie, ...), or 0
/// when there is no such process. Existence alone says little: a zombie whose reaper never comes
/// (PID 1 in a container may not reap) still exists.
inline char process_state(pid_t pid) {
  const std::string stat = read_text_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return 0;
  return stat[close_paren + 2];
}

/// SIGSTOPs a process and, when `with_children`, every live child it has (PostgreSQL's backends
/// are their own session leaders, so a process-group signal would miss them); SIGCONTs all of them
/// when the scope ends, whichever way it ends, so the server can be stopped afterwards.
class Frozen {
 public:
  /// Stops `pid` first (a stopped postmaster forks no new backend), then its children, and waits
  /// (up to 5 s) until /proc shows each of them stopped. stopped() says whether they all were.
  explicit Frozen(pid_t pid, bool with_children = false) {
    stop(pid);
    if (with_children) {
      // A child forked just before the parent stopped appears in a second listing.
      for (int pass = 0; pass < 2; ++pass)
        for (pid_t child : children_of(pid)) stop(child);
    }
    all_stopped_ = wait_until(
        [&] {
          return std::all_of(pids_.begin(), pids_.end(), [](pid_t p) {
            const char state = process_state(p);
            return state == 'T' || state == 't' || state == 'Z' || state == 0;
          });
        },
        std::chrono::seconds(5), std::chrono::milliseconds(5));
  }
  ~Frozen() { thaw(); }
  Frozen(const Frozen&) = delete;
  Frozen& operator=(const Frozen&) = delete;

  /// SIGCONTs every process this froze (the children first, the parent last); idempotent.
  void thaw() {
    for (auto it = pids_.rbegin(); it != pids_.rend(); ++it) ::kill(*it, SIGCONT);
    pids_.clear();
  }
  /// Whether every process was seen stopped.
  bool stopped() const { return all_stopped_; }
  /// How many processes were frozen (0 after thaw()).
  std::size_t count() const { return pids_.size(); }

 private:
  void stop(pid_t p) {
    if (std::find(pids_.begin(), pids_.end(), p) != pids_.end()) return;
    const char state = process_state(p);
    if (state == 0 || state == 'Z' || state == 'X') return;
    if (::kill(p, SIGSTOP) == 0) pids_.push_back(p);
  }

  std::vector<pid_t> pids_;
  bool all_stopped_ = false;
};

}  // namespace etcd_sync::testing
