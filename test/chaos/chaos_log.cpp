#include "test/chaos/chaos_log.hpp"

#include <cstdio>
#include <iostream>

namespace etcd_sync::chaos {

double ChaosLog::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
}

void ChaosLog::line(const std::string& text) {
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "[%8.3fs] ", elapsed());
  std::lock_guard lock(mutex_);
  std::cout << stamp << text << std::endl;
  if (file_) file_ << stamp << text << std::endl;
}

}  // namespace etcd_sync::chaos
