// The fault suite's own log: one timestamped line per event (seconds since the run began) on
// stdout and in <temp dir>/chaos.log. Safe to call from the writer threads.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

namespace etcd_sync::chaos {

class ChaosLog {
 public:
  ChaosLog() : began_(std::chrono::steady_clock::now()) {}

  /// Also appends every line to `path` from now on.
  void tee_to(const std::filesystem::path& path) {
    std::lock_guard lock(mutex_);
    file_.open(path, std::ios::app);
  }
  /// Writes "[  12.345s] line".
  void line(const std::string& text);
  /// Seconds since the log was created.
  double elapsed() const;

 private:
  std::chrono::steady_clock::time_point began_;
  std::mutex mutex_;
  std::ofstream file_;
};

}  // namespace etcd_sync::chaos
