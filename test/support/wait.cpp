#include "test/support/wait.hpp"

#include <algorithm>
#include <thread>

namespace etcd_sync::testing {

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds poll) {
  using std::chrono::steady_clock;
  const auto end = steady_clock::now() + deadline;
  while (!pred()) {
    const auto now = steady_clock::now();
    if (now >= end) return pred();
    std::this_thread::sleep_for(std::min<steady_clock::duration>(poll, end - now));
  }
  return true;
}

}  // namespace etcd_sync::testing
