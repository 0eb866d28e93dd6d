#include "reactor/loop/backoff.hpp"

#include <algorithm>

namespace etcd_sync {

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, std::uint64_t seed)
    : initial_(initial), max_(max), random_(seed) {}

void Backoff::set_limits(std::chrono::milliseconds initial, std::chrono::milliseconds max) {
  initial_ = initial;
  max_ = max;
}

std::chrono::milliseconds Backoff::nominal(int attempt) const {
  if (attempt < 1) attempt = 1;
  auto delay = initial_;
  for (int i = 1; i < attempt && delay < max_; ++i) delay *= 2;
  return std::min(delay, max_);
}

std::chrono::milliseconds Backoff::delay(int attempt) {
  auto nominal_ms = nominal(attempt).count();
  std::uniform_int_distribution<long long> jitter(nominal_ms / 2, nominal_ms);
  return std::chrono::milliseconds(jitter(random_));
}

}  // namespace etcd_sync
